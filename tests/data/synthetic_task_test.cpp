#include "data/tasks/synthetic_task.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

namespace reach::data::tasks {
namespace {

void expect_well_formed(const SyntheticTask& task, const TaskExample& ex, int64_t length) {
  ASSERT_EQ(static_cast<int64_t>(ex.tokens.size()), length);
  ASSERT_EQ(ex.targets.size(), ex.tokens.size());
  ASSERT_FALSE(ex.answers.empty());
  for (int32_t t : ex.tokens) {
    EXPECT_GE(t, 0);
    EXPECT_LT(t, task.vocab_size());
  }
  // Every target is the next token; answers cover exactly the non-ignored targets.
  int64_t covered = 0;
  for (auto [b, e] : ex.answers) {
    for (int64_t p = b; p < e; ++p) {
      EXPECT_EQ(ex.targets[p], ex.tokens[p + 1]);
      ++covered;
    }
  }
  EXPECT_EQ(covered, std::count_if(ex.targets.begin(), ex.targets.end(),
                                   [](int32_t t) { return t != kIgnore; }));
}

TEST(SyntheticTasks, SameSeedSameExampleAcrossLengths) {
  for (const char* name : {"associative_recall", "max_retrieval", "passkey"}) {
    auto task = make_task(name);
    for (int64_t length : {task->min_length(), int64_t{100}, int64_t{4096}}) {
      std::mt19937_64 a(42), b(42), c(43);
      const auto x = task->sample(length, a), y = task->sample(length, b),
                 z = task->sample(length, c);
      EXPECT_EQ(x.tokens, y.tokens) << name;
      EXPECT_NE(x.tokens, z.tokens) << name;
      expect_well_formed(*task, x, length);
    }
  }
}

TEST(SyntheticTasks, AssociativeRecallAnswersAreTheBoundValues) {
  AssociativeRecallSpec spec;
  spec.pairs = 6;
  spec.queries = 3;
  spec.tokens_per_item = 2;
  auto task = make_associative_recall(spec);
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 20; ++trial) {
    const auto ex = task->sample(300, rng);
    // Recover bindings from the context: key tokens are in [2, 2 + num_keys).
    std::map<std::vector<int32_t>, std::vector<int32_t>> bound;
    const int64_t query = std::find(ex.tokens.begin(), ex.tokens.end(), 1) - ex.tokens.begin();
    for (int64_t p = 0; p < query;) {
      if (ex.tokens[p] == 0) {
        ++p;
        continue;
      }
      bound[{ex.tokens[p], ex.tokens[p + 1]}] = {ex.tokens[p + 2], ex.tokens[p + 3]};
      p += 4;
    }
    EXPECT_EQ(static_cast<int>(bound.size()), spec.pairs);
    ASSERT_EQ(static_cast<int>(ex.answers.size()), spec.queries);
    for (auto [b, e] : ex.answers) {
      const std::vector<int32_t> key{ex.tokens[b - 1], ex.tokens[b]};
      ASSERT_TRUE(bound.count(key));
      EXPECT_EQ(ex.targets[b], bound[key][0]);
      EXPECT_EQ(ex.targets[b + 1], bound[key][1]);
    }
  }
}

TEST(SyntheticTasks, MaxRetrievalAnswerIsTheMaximum) {
  auto task = make_max_retrieval({});
  std::mt19937_64 rng(9);
  for (int trial = 0; trial < 50; ++trial) {
    const auto ex = task->sample(200, rng);
    const int32_t best = *std::max_element(ex.tokens.begin(), ex.tokens.end() - 2);
    EXPECT_EQ(ex.targets[198], best);
    EXPECT_EQ(ex.tokens[198], 1);
  }
}

// Diverse filler: every filler token is one of the filler ids (never a number or a marker),
// all of them occur, and the answer is still the largest number.
TEST(SyntheticTasks, MaxRetrievalWithDiverseFiller) {
  auto task = make_max_retrieval({8, 4, 5});
  EXPECT_EQ(task->vocab_size(), 1 + 8 + 5);
  std::mt19937_64 rng(4);
  std::set<int32_t> fillers;
  for (int trial = 0; trial < 20; ++trial) {
    const auto ex = task->sample(300, rng);
    int32_t best = -1;
    int numbers = 0;
    for (size_t p = 0; p + 2 < ex.tokens.size(); ++p) {
      const int32_t t = ex.tokens[p];
      ASSERT_NE(t, 1);
      if (t >= 2 && t < 10) {
        best = std::max(best, t);
        ++numbers;
      } else {
        ASSERT_TRUE(t == 0 || (t >= 10 && t < 14)) << t;
        fillers.insert(t);
      }
    }
    EXPECT_EQ(numbers, 4);
    EXPECT_EQ(ex.targets[298], best);
  }
  EXPECT_EQ(fillers.size(), 5u);
  EXPECT_THROW(make_max_retrieval({8, 4, 0}), std::invalid_argument);
}

TEST(SyntheticTasks, PasskeyIsHiddenAtTheRequestedDepth) {
  for (double depth : {0.0, 0.5, 1.0}) {
    auto task = make_passkey({5, depth});
    std::mt19937_64 rng(3);
    const auto ex = task->sample(1000, rng);
    const int64_t marker = std::find(ex.tokens.begin(), ex.tokens.end(), 10) - ex.tokens.begin();
    EXPECT_NEAR(static_cast<double>(marker) / (1000 - 12), depth, 0.01);
    for (int d = 0; d < 5; ++d) EXPECT_EQ(ex.tokens[marker + 1 + d], ex.tokens[1000 - 5 + d]);
  }
}

TEST(SyntheticTasks, AccuracyCountsWholeAnswers) {
  auto task = make_associative_recall({});
  std::mt19937_64 rng(1);
  const auto ex = task->sample(200, rng);
  std::vector<int32_t> perfect = ex.targets;
  EXPECT_DOUBLE_EQ(answer_accuracy(ex, perfect), 1.0);
  auto one_wrong = perfect;
  one_wrong[ex.answers[0].first + 1] = 0;  // second token of the first answer
  EXPECT_DOUBLE_EQ(answer_accuracy(ex, one_wrong), 1.0 - 1.0 / ex.answers.size());
  EXPECT_THROW(answer_accuracy(ex, {1, 2, 3}), std::invalid_argument);
}

TEST(SyntheticTasks, BadInputGivesClearErrors) {
  EXPECT_THROW(make_task("copying"), std::invalid_argument);
  auto task = make_max_retrieval({});
  std::mt19937_64 rng(0);
  EXPECT_THROW(task->sample(task->min_length() - 1, rng), std::invalid_argument);
  EXPECT_THROW(make_associative_recall({64, 64, 4, 8, 2}), std::invalid_argument);
  EXPECT_THROW(make_associative_recall({2, 64, 8, 2, 1}), std::invalid_argument);
  EXPECT_THROW(make_passkey({0, 0.5}), std::invalid_argument);
  EXPECT_THROW(make_passkey({5, 1.5}), std::invalid_argument);
}

}  // namespace
}  // namespace reach::data::tasks
