#include "data/tasks/synthetic_task.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

namespace reach::data::tasks {
namespace {

void expect_well_formed(const SyntheticTask& task, const TaskExample& ex, int64_t length) {
  ASSERT_EQ(static_cast<int64_t>(ex.tokens.size()), task.sequence_length(length));
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

// Seed 003's layout (its generate_data.py): bos, num_kv = floor(0.8 L / 6) rows of L / num_kv
// tokens each holding `key kvsep value` once, the queries, sep, then the target (qsep value)
// per query and eos. Parsed back here from the tokens alone.
TEST(SyntheticTasks, AssociativeRecallIsThePapersLayout) {
  const AssociativeRecallSpec spec;  // alphabet 256, 10k keys, length 2, 4 queries, 0.8
  auto task = make_associative_recall(spec);
  EXPECT_EQ(task->vocab_size(), 3 + 256 + 3);
  EXPECT_EQ(task->min_length(), 30);  // the shortest context with 4 bindings
  EXPECT_EQ(task->sequence_length(64), 1 + 64 + 12 + 1 + 12 + 1);
  EXPECT_EQ(task->sequence_length(50), 1 + 48 + 26);  // 6 rows of 8: the context is 48 long
  const int32_t bos = 259, sep = 260, eos = 261;
  std::mt19937_64 rng(5);
  for (int64_t length : {int64_t{32}, int64_t{48}, int64_t{64}, int64_t{1000}, int64_t{65536}}) {
    const int64_t pairs = static_cast<int64_t>(std::floor(0.8 * static_cast<double>(length) / 6));
    const int64_t row = length / pairs;
    for (int trial = 0; trial < (length > 1000 ? 1 : 20); ++trial) {
      const auto ex = task->sample(length, rng);
      expect_well_formed(*task, ex, length);
      ASSERT_EQ(ex.tokens[0], bos);
      std::map<std::vector<int32_t>, std::vector<int32_t>> bound;
      std::set<std::vector<int32_t>> values;
      for (int64_t r = 0; r < pairs; ++r) {
        const auto first = ex.tokens.begin() + 1 + r * row;
        const std::vector<int32_t> cells(first, first + row);
        const auto kv = std::find(cells.begin(), cells.end(), 1) - cells.begin();
        ASSERT_GE(kv, 2) << "row " << r;
        ASSERT_LE(kv + 3, row - 1) << "row " << r;  // the bound space always follows the value
        for (int64_t p = 0; p < row; ++p) {
          const bool in_binding = p >= kv - 2 && p <= kv + 2;
          if (in_binding && p != kv) {
            ASSERT_GE(cells[p], 3) << "row " << r;
            ASSERT_LT(cells[p], 259) << "row " << r;
          } else if (!in_binding) {
            ASSERT_EQ(cells[p], 0) << "row " << r << " cell " << p;
          }
        }
        const std::vector<int32_t> key{cells[kv - 2], cells[kv - 1]};
        const std::vector<int32_t> value{cells[kv + 1], cells[kv + 2]};
        ASSERT_TRUE(bound.emplace(key, value).second) << "a key bound twice";
        ASSERT_TRUE(values.insert(value).second) << "a value bound twice";
      }
      // Queries, sep, answers, eos.
      const int64_t q0 = 1 + pairs * row;
      ASSERT_EQ(ex.tokens[q0 + 12], sep);
      ASSERT_EQ(ex.tokens.back(), eos);
      ASSERT_EQ(ex.answers.size(), 1u);
      EXPECT_EQ(ex.answers[0], std::make_pair(q0 + 12, q0 + 25));  // 13 predictions: to eos
      for (int q = 0; q < 4; ++q) {
        ASSERT_EQ(ex.tokens[q0 + 3 * q], 2);
        ASSERT_EQ(ex.tokens[q0 + 13 + 3 * q], 2);
        const std::vector<int32_t> key{ex.tokens[q0 + 3 * q + 1], ex.tokens[q0 + 3 * q + 2]};
        ASSERT_TRUE(bound.contains(key));
        EXPECT_EQ(ex.tokens[q0 + 13 + 3 * q + 1], bound[key][0]);
        EXPECT_EQ(ex.tokens[q0 + 13 + 3 * q + 2], bound[key][1]);
      }
    }
  }
  // The number of bindings is capped by the vocabulary.
  auto small = make_associative_recall({16, 20, 2, 4, 0.8});
  EXPECT_EQ(small->sequence_length(1000), 1 + 20 * 50 + 26);
}

// The spaces of a row are split around its binding as the generator's random deletions split
// them: of the 2 (R + 1) - 6 free slots, R - 6 are kept, R - 1 of the slots lie before the
// binding, so the spaces before it are hypergeometric with mean (R - 6)(R - 1) / (2R - 4).
TEST(SyntheticTasks, AssociativeRecallSpacesFollowTheGenerator) {
  auto task = make_associative_recall({});
  std::mt19937_64 rng(11);
  const int64_t length = 2000, pairs = 266, row = length / pairs;  // 7 per row
  ASSERT_EQ(row, 7);
  std::map<int64_t, int64_t> before;
  int64_t rows = 0;
  for (int trial = 0; trial < 30; ++trial) {
    const auto ex = task->sample(length, rng);
    for (int64_t r = 0; r < pairs; ++r, ++rows) {
      const auto first = ex.tokens.begin() + 1 + r * row;
      before[std::find(first, first + row, 1) - first - 2] += 1;
    }
  }
  // R = 7: one space kept out of 10 free slots, 6 of them before: P(before = 1) = 0.6.
  ASSERT_EQ(before.size(), 2u);
  EXPECT_NEAR(static_cast<double>(before[1]) / static_cast<double>(rows), 0.6, 0.02);
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
  TaskExample ex;
  ex.tokens = {5, 6, 7, 8, 9, 4};
  ex.targets = {kIgnore, 7, 8, kIgnore, 4, kIgnore};
  ex.answers = {{1, 3}, {4, 5}};
  std::vector<int32_t> perfect = ex.targets;
  EXPECT_DOUBLE_EQ(answer_accuracy(ex, perfect), 1.0);
  auto one_wrong = perfect;
  one_wrong[2] = 0;  // second token of the first answer
  EXPECT_DOUBLE_EQ(answer_accuracy(ex, one_wrong), 0.5);
  EXPECT_THROW(answer_accuracy(ex, {1, 2, 3}), std::invalid_argument);
  // Associative recall has one answer per example, all queries' values: exact match.
  auto task = make_associative_recall({});
  std::mt19937_64 rng(1);
  const auto recall = task->sample(200, rng);
  auto wrong = recall.targets;
  wrong[recall.answers[0].second - 1] = 0;  // the eos prediction
  EXPECT_DOUBLE_EQ(answer_accuracy(recall, recall.targets), 1.0);
  EXPECT_DOUBLE_EQ(answer_accuracy(recall, wrong), 0.0);
}

TEST(SyntheticTasks, BadInputGivesClearErrors) {
  EXPECT_THROW(make_task("copying"), std::invalid_argument);
  auto task = make_max_retrieval({});
  std::mt19937_64 rng(0);
  EXPECT_THROW(task->sample(task->min_length() - 1, rng), std::invalid_argument);
  EXPECT_THROW(make_associative_recall({16, 257, 2, 4, 0.8}), std::invalid_argument);  // 16^2
  EXPECT_THROW(make_associative_recall({256, 100, 2, 4, 0.0}), std::invalid_argument);
  EXPECT_THROW(make_associative_recall({256, 100, 2, 4, 1.5}), std::invalid_argument);
  EXPECT_THROW(make_associative_recall({256, 100, 0, 4, 0.8}), std::invalid_argument);
  auto recall = make_associative_recall({});
  EXPECT_THROW(recall->sample(29, rng), std::invalid_argument);
  EXPECT_THROW(recall->sequence_length(29), std::invalid_argument);
  EXPECT_THROW(make_passkey({0, 0.5}), std::invalid_argument);
  EXPECT_THROW(make_passkey({5, 1.5}), std::invalid_argument);
}

}  // namespace
}  // namespace reach::data::tasks
