#include "data/tasks/variable_tracking_task.hpp"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <stdexcept>

#include "tests/data/filler_task_test_corpus.hpp"

namespace reach::data::tasks {
namespace {

using testing::corpus_file;

constexpr int32_t kBos = 256, kBegin = 257, kEnd = 258, kQuery = 259, kAnswer = 260, kEos = 261;

std::string bytes_of(const std::vector<int32_t>& t, int64_t begin, int64_t end) {
  std::string s;
  for (int64_t i = begin; i < end; ++i) s.push_back(static_cast<char>(t[static_cast<size_t>(i)]));
  return s;
}

std::string expect_message(const VariableTrackingSpec& spec) {
  try {
    make_variable_tracking(spec);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  ADD_FAILURE() << "no std::invalid_argument";
  return {};
}

TEST(VariableTrackingTask, ChainsInOrderAnswersFollowTheHops) {
  const auto task = make_variable_tracking({3, 4, 5, corpus_file()});
  EXPECT_EQ(task->name(), "variable_tracking");
  EXPECT_EQ(task->vocab_size(), 262);
  const std::string corpus = testing::prose();
  std::mt19937_64 rng(11);
  for (int64_t length : {task->min_length(), int64_t{1000}, int64_t{5000}}) {
    const auto ex = task->sample(length, rng);
    ASSERT_EQ(static_cast<int64_t>(ex.tokens.size()), length);
    EXPECT_EQ(ex.tokens.front(), kBos);
    EXPECT_EQ(ex.tokens.back(), kEos);
    // Statements in text order: name -> right-hand side; a right-hand side that is a name
    // must have been assigned before (the chains are in order).
    std::map<std::string, std::string> assigned;
    std::string filler;
    size_t p = 1;
    int64_t query_start = -1;
    while (p < ex.tokens.size()) {
      const int32_t t = ex.tokens[p];
      if (t == kBegin) {
        size_t e = p + 1;
        while (ex.tokens[e] != kEnd) ++e;
        const std::string s =
            bytes_of(ex.tokens, static_cast<int64_t>(p + 1), static_cast<int64_t>(e));
        ASSERT_EQ(s.rfind("VAR ", 0), 0u) << s;
        const auto eq = s.find(" = ");
        ASSERT_NE(eq, std::string::npos);
        const std::string name = s.substr(4, eq - 4), rhs = s.substr(eq + 3);
        EXPECT_EQ(name.size(), 5u);
        if (std::isupper(static_cast<unsigned char>(rhs[0]))) {
          ASSERT_TRUE(assigned.contains(rhs)) << rhs << " used before it is assigned";
        } else {
          EXPECT_EQ(rhs.size(), 5u);
        }
        EXPECT_TRUE(assigned.emplace(name, rhs).second) << "names are distinct";
        p = e + 1;
      } else if (t == kQuery) {
        query_start = static_cast<int64_t>(p);
        break;
      } else {
        ASSERT_LT(t, 256);
        filler.push_back(static_cast<char>(t));
        ++p;
      }
    }
    EXPECT_EQ(assigned.size(), 15u);  // 3 chains of 1 + 4
    EXPECT_NE(corpus.find(filler), std::string::npos) << "the filler is a span of the corpus";
    EXPECT_EQ(static_cast<int64_t>(filler.size()), length - (task->min_length() - 64));
    // One query per chain, naming its last variable (assigned from a name, never used on a
    // right-hand side); the answer is the value reached by following the hops.
    std::set<std::string> used;
    for (const auto& [name, rhs] : assigned) used.insert(rhs);
    ASSERT_EQ(ex.answers.size(), 3u);
    std::set<std::string> values;
    int64_t q = query_start;
    for (const auto& [begin, end] : ex.answers) {
      ASSERT_EQ(ex.tokens[static_cast<size_t>(q)], kQuery);
      std::string name = bytes_of(ex.tokens, q + 1, q + 6);
      ASSERT_EQ(ex.tokens[static_cast<size_t>(q + 6)], kAnswer);
      EXPECT_EQ(begin, q + 6);
      EXPECT_EQ(end, q + 11);
      EXPECT_FALSE(used.contains(name)) << "the query names the last variable of a chain";
      int hops = 0;
      while (std::isupper(static_cast<unsigned char>(assigned.at(name)[0]))) {
        name = assigned.at(name);
        ++hops;
      }
      EXPECT_EQ(hops, 4);
      EXPECT_EQ(bytes_of(ex.tokens, q + 7, q + 12), assigned.at(name));
      values.insert(assigned.at(name));
      for (int64_t i = begin; i < end; ++i) {
        EXPECT_EQ(ex.targets[static_cast<size_t>(i)], ex.tokens[static_cast<size_t>(i + 1)]);
      }
      q += 12;
    }
    EXPECT_EQ(values.size(), 3u) << "every chain is asked once, values distinct";
    EXPECT_EQ(q, length - 1);
  }
}

TEST(VariableTrackingTask, DeterministicUnderASeed) {
  const auto task = make_variable_tracking({1, 2, 5, corpus_file()});
  std::mt19937_64 a(5), b(5), c(6);
  const auto x = task->sample(800, a), y = task->sample(800, b), z = task->sample(800, c);
  EXPECT_EQ(x.tokens, y.tokens);
  EXPECT_EQ(x.targets, y.targets);
  EXPECT_NE(x.tokens, z.tokens);
}

TEST(VariableTrackingTask, BadSpecsNameTheProblem) {
  EXPECT_NE(expect_message({0, 2, 5, corpus_file()}).find("task.chains must be >= 1"),
            std::string::npos);
  EXPECT_NE(expect_message({1, 0, 5, corpus_file()}).find("task.hops must be >= 1"),
            std::string::npos);
  EXPECT_NE(expect_message({1, 2, 0, corpus_file()}).find("task.digits must be >= 1"),
            std::string::npos);
  EXPECT_NE(expect_message({11, 1, 1, corpus_file()}).find("exceeds the distinct values"),
            std::string::npos);
  EXPECT_NE(expect_message({1, 2, 5, "/nonexistent/dir"}).find("does not exist"),
            std::string::npos);
  EXPECT_NE(expect_message({1, 2, 5, testing::tiny_corpus()}).find("fewer than the 64"),
            std::string::npos);
  const auto task = make_variable_tracking({1, 2, 5, corpus_file()});
  std::mt19937_64 rng(1);
  EXPECT_THROW(task->sample(task->min_length() - 1, rng), std::invalid_argument);
  EXPECT_THROW(task->sample(100000, rng), std::invalid_argument);  // longer than the corpus
}

}  // namespace
}  // namespace reach::data::tasks
