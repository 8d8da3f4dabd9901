#include "data/tokenizer/tokenizer.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "data/tokenizer/token_cache.hpp"
#include "io/remove_tree.hpp"

namespace reach::data {
namespace {

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const auto dir = fs::temp_directory_path() / name;
  reach::io::remove_tree(dir);
  fs::create_directories(dir);
  return dir;
}

TEST(Tokenizer, ByteRoundTripsArbitraryBytes) {
  const auto tok = make_byte_tokenizer();
  std::mt19937 rng(1);
  std::string text;
  for (int i = 0; i < 1000; ++i)
    text.push_back(static_cast<char>(rng() & 0xff));  // invalid UTF-8 too
  const auto ids = tok->encode(text);
  ASSERT_EQ(ids.size(), text.size());
  for (uint32_t id : ids) EXPECT_LT(id, 256u);
  EXPECT_EQ(tok->decode(ids), text);
  EXPECT_THROW(tok->decode({300}), std::invalid_argument);
}

TEST(Tokenizer, SentencePieceTrainsSavesAndRoundTrips) {
  Corpus corpus;
  corpus.name = "test";
  const auto kjv = load_corpus("kjv");
  corpus.train.assign(kjv.train.begin(), kjv.train.begin() + 3);  // ~0.4 MB: a few seconds
  const auto dir = fresh_dir("reach_sp_test");
  const auto tok = train_sentencepiece(corpus, 500, dir.string());
  EXPECT_EQ(tok->vocab_size(), 500);
  const std::string text = "And God said, Let there be light: and there was light. Zebedee's 42 é";
  const auto ids = tok->encode(text);
  EXPECT_LT(ids.size(), text.size() / 2);  // BPE merges: fewer tokens than bytes
  EXPECT_EQ(tok->decode(ids), text);       // byte fallback keeps unseen characters
  const auto loaded = load_tokenizer(dir.string());
  EXPECT_EQ(loaded->kind(), "sentencepiece");
  EXPECT_EQ(loaded->encode(text), ids);
  EXPECT_EQ(loaded->fingerprint(), tok->fingerprint());
  reach::io::remove_tree(dir);
}

// encode_many (one sentencepiece process per ~4 MB batch, batches in parallel) must give each
// text exactly what encode gives it alone: the KJV twice (~8 MB: three batches, so batch
// boundaries and two workers) with texts whose line structure is the hard part placed at both
// ends and in the middle.
TEST(Tokenizer, SentencePieceEncodeManyEqualsEncodeOfEachText) {
  Corpus corpus;
  corpus.name = "test";
  const auto kjv = load_corpus("kjv");
  corpus.train.assign(kjv.train.begin(), kjv.train.begin() + 3);
  const auto dir = fresh_dir("reach_sp_many_test");
  const auto tok = train_sentencepiece(corpus, 500, dir.string());
  const std::vector<std::string> odd{
      "\n\n\n", "", "x", "ends in a newline\n", "two\n\nparagraphs é\n", "\nstarts with one"};
  std::vector<std::string> texts(odd.begin(), odd.end());
  for (const auto* split : {&kjv.train, &kjv.heldout}) {
    for (const auto& d : *split) {
      texts.push_back(d.text);
      if (texts.size() == 40) texts.insert(texts.end(), odd.begin(), odd.end());
    }
  }
  texts.insert(texts.end(), odd.begin(), odd.end());
  for (auto book = kjv.train.rbegin(); book != kjv.train.rend(); ++book)
    texts.push_back(book->text);
  size_t bytes = 0;
  for (const auto& t : texts) bytes += t.size();
  ASSERT_GT(bytes, size_t{4} << 20) << "the texts must span more than one batch";
  const auto many = tok->encode_many(std::vector<std::string_view>(texts.begin(), texts.end()));
  ASSERT_EQ(many.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(many[i], tok->encode(texts[i])) << "text " << i << ": " << texts[i].substr(0, 40);
  }
  EXPECT_TRUE(tok->encode_many({}).empty());
  reach::io::remove_tree(dir);
}

// A Python that imports sentencepiece (Debian's python3-sentencepiece is /usr/bin/python3's).
std::string python_with_sentencepiece() {
  for (std::string python : {"python3", "/usr/bin/python3"}) {
    if (std::system((python + " -c 'import sentencepiece' >/dev/null 2>&1").c_str()) == 0)
      return python;
  }
  return "";
}

// The GPU machine has Python's sentencepiece, not Debian's programs: the Python runner must
// give the programs' ids and text exactly, line structure included.
TEST(Tokenizer, SentencePiecePythonRunnerMatchesThePrograms) {
  const auto python = python_with_sentencepiece();
  if (python.empty()) GTEST_SKIP() << "no python3 here imports sentencepiece";
  if (std::system("command -v spm_encode >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "Debian's spm_encode is not installed";
  }
  Corpus corpus;
  corpus.name = "test";
  const auto kjv = load_corpus("kjv");
  corpus.train.assign(kjv.train.begin(), kjv.train.begin() + 2);
  const auto dir = fresh_dir("reach_sp_runner_test");
  setenv("REACH_PYTHON", python.c_str(), 1);
  setenv("REACH_SENTENCEPIECE", "python", 1);
  const auto trained_by_python = train_sentencepiece(corpus, 400, dir.string());
  EXPECT_EQ(trained_by_python->vocab_size(), 400);
  const std::vector<std::string> texts{"In the beginning\n\nGod created\tthe heaven é ü 中文\n",
                                       "no final newline\r\nthen a CRLF line", "\n\n\n", "", "x"};
  for (const auto& text : texts) {
    setenv("REACH_SENTENCEPIECE", "python", 1);
    const auto by_python = trained_by_python->encode(text);
    const auto back_by_python = trained_by_python->decode(by_python);
    setenv("REACH_SENTENCEPIECE", "programs", 1);
    EXPECT_EQ(trained_by_python->encode(text), by_python) << text;
    EXPECT_EQ(trained_by_python->decode(by_python), back_by_python) << text;
    EXPECT_EQ(back_by_python, text);
  }
  setenv("REACH_SENTENCEPIECE", "neither", 1);
  try {
    trained_by_python->encode("a");
    ADD_FAILURE() << "REACH_SENTENCEPIECE=neither was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'programs' or 'python'"), std::string::npos) << e.what();
  }
  unsetenv("REACH_SENTENCEPIECE");
  unsetenv("REACH_PYTHON");
  reach::io::remove_tree(dir);
}

TEST(Tokenizer, BadSpecsAreClearErrors) {
  EXPECT_THROW(load_tokenizer("/no/such/tokenizer"), std::runtime_error);
  const auto dir = fresh_dir("reach_bad_tok");
  std::ofstream(dir / "tokenizer.json") << "{\"type\": \"wordpiece\"}";
  try {
    load_tokenizer(dir.string());
    ADD_FAILURE();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown type 'wordpiece'"), std::string::npos);
  }
  reach::io::remove_tree(dir);
}

TEST(TokenCache, BuildsOnceReusesAndDetectsTruncation) {
  const auto cache = fresh_dir("reach_cache_test");
  const auto corpus = load_corpus("kjv");
  const auto tok = make_byte_tokenizer();
  size_t train_tokens = 0;
  {
    auto first = TokenizedCorpus::open_or_build(corpus, *tok, cache.string());
    EXPECT_TRUE(first.built_now());
    for (const auto& d : corpus.train) train_tokens += d.text.size();
    EXPECT_EQ(first.train_stream().size(), train_tokens);
    ASSERT_EQ(first.heldout().size(), corpus.heldout.size());
    EXPECT_EQ(tok->decode({first.heldout()[0].begin(), first.heldout()[0].end()}),
              corpus.heldout[0].text);
  }
  std::string path;
  {
    auto second = TokenizedCorpus::open_or_build(corpus, *tok, cache.string());
    EXPECT_FALSE(second.built_now());
    EXPECT_EQ(second.train_stream().size(), train_tokens);
    path = second.path();
  }
  fs::resize_file(path, 1000);
  try {
    TokenizedCorpus::open_or_build(corpus, *tok, cache.string());
    ADD_FAILURE();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  reach::io::remove_tree(cache);
}

}  // namespace
}  // namespace reach::data
