#include "data/tasks/needle_task.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <set>
#include <stdexcept>

#include "data/tasks/filler_text.hpp"
#include "tests/data/filler_task_test_corpus.hpp"

namespace reach::data::tasks {
namespace {

using testing::contains_bytes;
using testing::corpus_file;

constexpr int32_t kBos = 256, kNeedleBegin = 257, kNeedleEnd = 258, kQuery = 259, kAnswer = 260,
                  kEos = 261;

std::string bytes_of(const std::vector<int32_t>& t, int64_t begin, int64_t end) {
  std::string s;
  for (int64_t i = begin; i < end; ++i) s.push_back(static_cast<char>(t[static_cast<size_t>(i)]));
  return s;
}

std::string expect_message(const NeedleSpec& spec) {
  try {
    make_needle(spec);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  ADD_FAILURE() << "no std::invalid_argument";
  return {};
}

TEST(NeedleTask, LayoutAnswersAndRealFiller) {
  const auto task = make_needle({4, 3, 5, corpus_file()});
  EXPECT_EQ(task->name(), "needle");
  EXPECT_EQ(task->vocab_size(), 262);
  const std::string corpus = testing::prose();
  std::mt19937_64 rng(7);
  for (int64_t length : {task->min_length(), int64_t{600}, int64_t{4000}}) {
    const auto ex = task->sample(length, rng);
    ASSERT_EQ(static_cast<int64_t>(ex.tokens.size()), length);
    ASSERT_EQ(ex.targets.size(), ex.tokens.size());
    EXPECT_EQ(ex.tokens.front(), kBos);
    EXPECT_EQ(ex.tokens.back(), kEos);
    for (int32_t t : ex.tokens) {
      ASSERT_GE(t, 0);
      ASSERT_LT(t, 262);
    }
    // The needles: parse them out, key -> value; remove them and the filler left is one
    // contiguous span of the corpus.
    std::map<std::string, std::string> needles;
    std::string filler;
    size_t p = 1;
    int64_t query_start = -1;
    while (p < ex.tokens.size()) {
      const int32_t t = ex.tokens[p];
      if (t == kNeedleBegin) {
        size_t e = p + 1;
        while (ex.tokens[e] != kNeedleEnd) ++e;
        const std::string text =
            bytes_of(ex.tokens, static_cast<int64_t>(p + 1), static_cast<int64_t>(e));
        const std::string prefix = "the special magic number for ";
        ASSERT_EQ(text.rfind(prefix, 0), 0u) << text;
        const auto is = text.find(" is: ");
        ASSERT_NE(is, std::string::npos);
        const std::string key = text.substr(prefix.size(), is - prefix.size());
        const std::string value = text.substr(is + 5);
        EXPECT_EQ(key.size(), 4u);
        EXPECT_EQ(value.size(), 5u);
        EXPECT_TRUE(needles.emplace(key, value).second) << "keys are distinct";
        p = e + 1;
      } else if (t == kQuery) {
        query_start = static_cast<int64_t>(p);
        break;
      } else {
        ASSERT_LT(t, 256) << "only bytes between the needles";
        filler.push_back(static_cast<char>(t));
        ++p;
      }
    }
    EXPECT_EQ(needles.size(), 4u);
    EXPECT_NE(corpus.find(filler), std::string::npos) << "the filler is a span of the corpus";
    EXPECT_EQ(static_cast<int64_t>(filler.size()), length - (task->min_length() - 64))
        << "the filler is what the fixed part leaves";
    // The queries: (query key answer value) x 3, distinct keys, each value the needle's, and
    // exactly the value digits are targets, each the next token.
    ASSERT_GE(query_start, 0);
    ASSERT_EQ(ex.answers.size(), 3u);
    std::set<std::string> asked;
    int64_t q = query_start;
    for (const auto& [begin, end] : ex.answers) {
      ASSERT_EQ(ex.tokens[static_cast<size_t>(q)], kQuery);
      const std::string key = bytes_of(ex.tokens, q + 1, q + 5);
      ASSERT_EQ(ex.tokens[static_cast<size_t>(q + 5)], kAnswer);
      EXPECT_EQ(begin, q + 5);
      EXPECT_EQ(end, q + 10);
      ASSERT_TRUE(needles.contains(key)) << "the queried key is a needle's";
      EXPECT_EQ(bytes_of(ex.tokens, q + 6, q + 11), needles[key]) << "the answer is findable";
      EXPECT_TRUE(asked.insert(key).second);
      for (int64_t i = begin; i < end; ++i) {
        EXPECT_EQ(ex.targets[static_cast<size_t>(i)], ex.tokens[static_cast<size_t>(i + 1)]);
      }
      q += 11;
    }
    EXPECT_EQ(q, length - 1);
    int64_t targets = 0;
    for (int32_t t : ex.targets) targets += t != kIgnore ? 1 : 0;
    EXPECT_EQ(targets, 15);
  }
}

TEST(NeedleTask, DeterministicUnderASeedAndVaried) {
  const auto task = make_needle({2, 1, 5, corpus_file()});
  std::mt19937_64 a(3), b(3), c(4);
  const auto x = task->sample(500, a), y = task->sample(500, b), z = task->sample(500, c);
  EXPECT_EQ(x.tokens, y.tokens);
  EXPECT_EQ(x.targets, y.targets);
  EXPECT_NE(x.tokens, z.tokens);
  // Within one stream the examples differ too (keys, values, depths, span).
  EXPECT_NE(task->sample(500, a).tokens, x.tokens);
}

TEST(NeedleTask, AFolderCorpus) {
  const auto task = make_needle({1, 1, 3, testing::corpus_folder()});
  std::mt19937_64 rng(1);
  const auto ex = task->sample(2000, rng);
  EXPECT_EQ(ex.tokens.size(), 2000u);
  EXPECT_TRUE(contains_bytes(ex.tokens, 0, 2000, "the earth"));
}

TEST(NeedleTask, ALongExampleIsCheap) {
  // 1M tokens of a 5.6 KB corpus cannot be one span: the error names the sizes. With a folder
  // of repeated text big enough, 1M tokens take well under a second.
  const auto task = make_needle({4, 4, 5, corpus_file()});
  std::mt19937_64 rng(1);
  try {
    task->sample(1 << 20, rng);
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("fewer than the"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("length 1048576"), std::string::npos) << e.what();
  }
  const auto dir = std::filesystem::path(corpus_file()).parent_path() / "big";
  std::filesystem::create_directories(dir);
  {
    std::ofstream out(dir / "big.txt");
    const auto text = testing::prose();
    for (int i = 0; i < 200; ++i) out << text;  // 1.1 MB
  }
  const auto big = make_needle({4, 4, 5, dir.string()});
  const auto t0 = std::chrono::steady_clock::now();
  const auto ex = big->sample(1 << 20, rng);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(ex.tokens.size(), size_t{1} << 20);
  EXPECT_EQ(ex.answers.size(), 4u);
  EXPECT_LT(s, 2.0);
}

TEST(NeedleTask, BadSpecsNameTheProblem) {
  EXPECT_NE(expect_message({0, 1, 5, corpus_file()}).find("task.needles must be >= 1"),
            std::string::npos);
  EXPECT_NE(
      expect_message({2, 3, 5, corpus_file()}).find("task.queries must be in 1..task.needles"),
      std::string::npos);
  EXPECT_NE(expect_message({2, 0, 5, corpus_file()}).find("task.queries"), std::string::npos);
  EXPECT_NE(expect_message({2, 1, 0, corpus_file()}).find("task.digits"), std::string::npos);
  EXPECT_NE(expect_message({2, 1, 5, "/nonexistent/corpus.txt"}).find("does not exist"),
            std::string::npos);
  const auto short_message = expect_message({2, 1, 5, testing::tiny_corpus()});
  EXPECT_NE(short_message.find("has 9 bytes, fewer than the 64"), std::string::npos)
      << short_message;
  const auto task = make_needle({2, 1, 5, corpus_file()});
  std::mt19937_64 rng(1);
  try {
    task->sample(task->min_length() - 1, rng);
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("shorter than the task's minimum"), std::string::npos);
  }
}

}  // namespace
}  // namespace reach::data::tasks
