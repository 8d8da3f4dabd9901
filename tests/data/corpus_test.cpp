#include "data/corpus/corpus.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

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
  fs::remove_all(dir);
  fs::create_directories(dir / "sub");
  for (int i = 0; i < 20; ++i)
    std::ofstream(dir / "sub" / ("doc" + std::to_string(i))) << "text " << i;
  const auto corpus = load_corpus(dir.string());
  EXPECT_EQ(corpus.train.size() + corpus.heldout.size(), 20u);
  const auto single = load_corpus((dir / "sub" / "doc3").string());
  EXPECT_EQ(single.train.size() + single.heldout.size(), 1u);
  fs::remove_all(dir);
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
