#include "data/corpus/corpus.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "io/remove_tree.hpp"

namespace reach::data {
namespace {

namespace fs = std::filesystem;

TEST(Corpus, KjvHas66BooksSplitDeterministically) {
  const auto corpus = load_corpus("kjv");
  EXPECT_EQ(corpus.train.size() + corpus.heldout.size(), 66u);
  std::vector<std::string> heldout;
  for (const auto& d : corpus.heldout) heldout.push_back(d.name);
  EXPECT_EQ(heldout, (std::vector<std::string>{"Proverbs", "Song of Solomon", "Isaiah", "Malachi",
                                               "Philippians", "2 John"}));
  EXPECT_EQ(corpus.train.front().name, "Genesis");
  EXPECT_TRUE(corpus.train.front().text.starts_with("In the beginning God created"));
  for (const auto& d : corpus.train) EXPECT_FALSE(is_heldout(d.name));
  // Its split is by name: a fraction is refused (naming the key), named books are honoured.
  EXPECT_THROW(load_corpus("kjv", {0.2, {}}), std::invalid_argument);
  const auto named = load_corpus("kjv", split_options(0.1, "Genesis"));
  ASSERT_EQ(named.heldout.size(), 1u);
  EXPECT_EQ(named.heldout[0].name, "Genesis");
}

TEST(Corpus, SplitsBookText) {
  const std::string text =
      "\nGenesis 1\n\n  1 In the beginning.\n  2 And the earth\nwas void.\n\nGenesis 2\n\n"
      "  1 Thus.\n\n1 Kings 1\n\n  1 Now king David.\n";
  const auto books = split_kjv_books(text);
  ASSERT_EQ(books.size(), 2u);
  EXPECT_EQ(books[0].name, "Genesis");
  EXPECT_EQ(books[0].text, "In the beginning.\nAnd the earth was void.\nThus.\n");
  EXPECT_EQ(books[1].name, "1 Kings");
}

TEST(Corpus, ReadsUserFilesAndFolders) {
  const fs::path dir = fs::temp_directory_path() / "reach_corpus_test";
  reach::io::remove_tree(dir);
  fs::create_directories(dir / "sub");
  for (int i = 0; i < 20; ++i)
    std::ofstream(dir / "sub" / ("doc" + std::to_string(i))) << "text " << i;
  const auto corpus = load_corpus(dir.string());
  // Every file is read; one of them may be split by position into a training part and a
  // held-out tail named "NAME [from byte N]" (docs/data.md).
  std::set<std::string> files;
  for (const auto* part : {&corpus.train, &corpus.heldout})
    for (const auto& d : *part) files.insert(d.name.substr(0, d.name.find(" [from byte ")));
  EXPECT_EQ(files.size(), 20u);
  EXPECT_LE(corpus.train.size() + corpus.heldout.size(), 21u);
  const auto single = load_corpus((dir / "sub" / "doc3").string());
  ASSERT_EQ(single.train.size(), 1u);
  ASSERT_EQ(single.heldout.size(), 1u);
  EXPECT_EQ(single.train[0].text + single.heldout[0].text, "text 3");
  reach::io::remove_tree(dir);
}

// The kjv split is by book name and must never move (the demo's numbers depend on it).
TEST(Corpus, NameHashIsTheDocumentedFunction) {
  // Not FNV-1a (offset basis 14695981039346656037): FNV-1a's structure with the basis
  // 1469598103934665603. Values pinned so the split cannot change unnoticed.
  EXPECT_EQ(name_hash64(""), 1469598103934665603ull);
  uint64_t h = 1469598103934665603ull;
  for (const unsigned char c : std::string("Isaiah")) h = (h ^ c) * 1099511628211ull;
  EXPECT_EQ(name_hash64("Isaiah"), h);
  EXPECT_TRUE(is_heldout("Isaiah"));
  EXPECT_FALSE(is_heldout("Genesis"));
}

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / name;
  reach::io::remove_tree(dir);
  fs::create_directories(dir);
  return dir;
}

std::string lines_of(int count, const std::string& word) {
  std::string text;
  for (int i = 0; i < count; ++i) text += word + " " + std::to_string(i) + "\n";
  return text;
}

TEST(Corpus, SingleFileIsSplitByPosition) {
  const auto dir = fresh_dir("reach_corpus_single");
  const std::string text = lines_of(1000, "line");
  std::ofstream(dir / "book.txt") << text;
  const auto corpus = load_corpus((dir / "book.txt").string());
  ASSERT_EQ(corpus.train.size(), 1u);
  ASSERT_EQ(corpus.heldout.size(), 1u);
  // The tail is held out, from a line start, about 10% of the bytes; nothing lost or repeated.
  EXPECT_EQ(corpus.train[0].text + corpus.heldout[0].text, text);
  EXPECT_TRUE(corpus.train[0].text.ends_with("\n"));
  const double fraction =
      static_cast<double>(corpus.heldout[0].text.size()) / static_cast<double>(text.size());
  EXPECT_NEAR(fraction, 0.1, 0.01);
  EXPECT_EQ(corpus.train[0].name, "book.txt");
  EXPECT_TRUE(corpus.heldout[0].name.starts_with("book.txt [from byte "));
  // Another fraction moves the cut.
  const auto quarter = load_corpus((dir / "book.txt").string(), {0.25, {}});
  EXPECT_NEAR(static_cast<double>(quarter.heldout[0].text.size()) / text.size(), 0.25, 0.01);
  reach::io::remove_tree(dir);
}

TEST(Corpus, FolderHoldsOutWholeFilesThenATail) {
  const auto dir = fresh_dir("reach_corpus_folder");
  size_t total = 0;
  for (int i = 0; i < 27; ++i) {
    const std::string text = lines_of(20 + 7 * i, "doc" + std::to_string(i));
    total += text.size();
    std::ofstream(dir / ("f" + std::to_string(i) + ".txt")) << text;
  }
  const auto corpus = load_corpus(dir.string());
  size_t held = 0, kept = 0;
  int split_files = 0;
  for (const auto& d : corpus.heldout) {
    held += d.text.size();
    split_files += d.name.find(" [from byte ") != std::string::npos;
  }
  for (const auto& d : corpus.train) kept += d.text.size();
  EXPECT_EQ(held + kept, total);
  EXPECT_LE(split_files, 1);
  EXPECT_GE(corpus.heldout.size(), 2u);
  EXPECT_NEAR(static_cast<double>(held) / static_cast<double>(total), 0.1, 0.01);
  reach::io::remove_tree(dir);
}

TEST(Corpus, HeldoutFilesAreExactlyTheNamedOnes) {
  const auto dir = fresh_dir("reach_corpus_named");
  fs::create_directories(dir / "sub");
  std::ofstream(dir / "a.txt") << "alpha\n";
  std::ofstream(dir / "sub" / "b.txt") << "beta\n";
  std::ofstream(dir / "c.txt") << "gamma\n";
  const auto corpus = load_corpus(dir.string(), split_options(0.1, "sub/b.txt, c.txt"));
  ASSERT_EQ(corpus.heldout.size(), 2u);
  EXPECT_EQ(corpus.heldout[0].name, "c.txt");
  EXPECT_EQ(corpus.heldout[1].name, "sub/b.txt");
  ASSERT_EQ(corpus.train.size(), 1u);
  EXPECT_EQ(corpus.train[0].name, "a.txt");
  // A name that is not there, an empty item, everything held out, a bad fraction: clear errors.
  auto message = [&](const SplitOptions& split) {
    try {
      load_corpus(dir.string(), split);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(split_options(0.1, "nope.txt")).find("has no document 'nope.txt'"),
            std::string::npos);
  EXPECT_THROW(split_options(0.1, "a.txt,,c.txt"), std::invalid_argument);
  EXPECT_THROW(split_options(0.1, "a.txt,"), std::invalid_argument);
  EXPECT_NE(message(split_options(0.1, "a.txt,sub/b.txt,c.txt")).find("no training documents"),
            std::string::npos);
  EXPECT_NE(message({1.0, {}}).find("data.heldout_fraction must be in (0, 1)"), std::string::npos);
  reach::io::remove_tree(dir);
}

TEST(Corpus, DirectoryAsAFileIsAClearError) {
  const auto dir = fresh_dir("reach_corpus_dir_as_file");
  EXPECT_THROW(read_file_bytes(dir.string()), std::runtime_error);
  reach::io::remove_tree(dir);
}

TEST(Corpus, MissingPathIsAClearError) {
  try {
    load_corpus("/no/such/corpus");
    ADD_FAILURE();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/no/such/corpus"), std::string::npos);
  }
}

}  // namespace
}  // namespace reach::data

namespace reach::data {
namespace {

// Long (label "long"): needs linux-source-6.1 installed; extracts ~1 GB on first use.
TEST(CorpusLong, LinuxSourceLoadsAsManyDocuments) {
  const auto corpus = load_corpus("linux");
  EXPECT_GT(corpus.train.size(), 20000u);
  EXPECT_GT(corpus.heldout.size(), 2000u);
  size_t bytes = 0;
  for (const auto& d : corpus.train) bytes += d.text.size();
  EXPECT_GT(bytes, 300u * 1024 * 1024);
}

}  // namespace
}  // namespace reach::data
