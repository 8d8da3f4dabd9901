#include "pattern/chunk_selection.hpp"

#include <gtest/gtest.h>

#include <stdexcept>

namespace reach::pattern {
namespace {

// The definition, one chunk at a time: fully past, and not wholly inside the window.
bool is_candidate(int64_t chunk, int64_t t, int64_t s, int64_t w) {
  const bool past = t >= (chunk + 1) * s;
  const bool inside_window = w > 0 && chunk * s >= t - w + 1;
  return past && !inside_window;
}

TEST(ChunkSelection, CandidatesArePrefixMatchingDefinition) {
  for (int64_t s : {1, 2, 3, 8}) {
    for (int64_t w : {0, 1, 2, 5, 8, 13}) {
      ChunkSelection sel{s, 4, w};
      for (int64_t t = 0; t < 60; ++t) {
        int64_t count = 0;
        bool prefix = true;
        for (int64_t i = 0; i < 60; ++i) {
          if (is_candidate(i, t, s, w)) {
            prefix = prefix && i == count;
            ++count;
          }
        }
        ASSERT_TRUE(prefix) << "s=" << s << " w=" << w << " t=" << t;
        ASSERT_EQ(candidate_chunks(sel, t), count) << "s=" << s << " w=" << w << " t=" << t;
      }
    }
  }
}

TEST(ChunkSelection, ChunkBecomesCandidateOnceFullyPast) {
  const ChunkSelection sel{64, 8, 0};
  EXPECT_EQ(candidate_chunks(sel, 0), 0);
  EXPECT_EQ(candidate_chunks(sel, 63), 0);  // chunk 0 ends at 63: not fully past for t = 63
  EXPECT_EQ(candidate_chunks(sel, 64), 1);
  EXPECT_EQ(candidate_chunks(sel, 127), 1);
  EXPECT_EQ(candidate_chunks(sel, 128), 2);
}

TEST(ChunkSelection, WindowExcludesOnlyChunksWhollyInsideIt) {
  // S = 4, W = 6: at t = 12 the window is 7..12; chunk 2 (8..11) is wholly inside, chunk 1
  // (4..7) only partly, so the candidates are chunks 0 and 1.
  const ChunkSelection sel{4, 8, 6};
  EXPECT_EQ(candidate_chunks(sel, 12), 2);
  EXPECT_EQ(candidate_chunks(sel, 5), 0);   // t < W
  EXPECT_EQ(candidate_chunks(sel, 10), 2);  // window 5..10: chunk 1 (4..7) partly outside
  // A window no longer than a chunk excludes nothing beyond the fully-past rule.
  for (int64_t t = 0; t < 40; ++t) {
    EXPECT_EQ(candidate_chunks(ChunkSelection{4, 8, 4}, t), t >= 4 ? t / 4 : 0) << t;
  }
}

TEST(ChunkSelection, FixedBudgetIsMinOfCandidatesAndK) {
  const ChunkSelection sel{64, 8, 0};
  EXPECT_EQ(selected_chunks(sel, 0), 0);
  EXPECT_EQ(selected_chunks(sel, 3), 3);
  EXPECT_EQ(selected_chunks(sel, 8), 8);
  EXPECT_EQ(selected_chunks(sel, 1000), 8);
}

TEST(ChunkSelection, FractionBudgetIsBoundedCeilOfFractionOfCandidates) {
  ChunkSelection sel{64, 8, 0, ChunkBudgetRule::fraction, 0.1, 2};
  EXPECT_EQ(selected_chunks(sel, 0), 0);
  EXPECT_EQ(selected_chunks(sel, 1), 1);    // min(C, 2)
  EXPECT_EQ(selected_chunks(sel, 5), 2);    // ceil(0.5) = 1 -> min_k 2
  EXPECT_EQ(selected_chunks(sel, 30), 3);   // 0.1 * 30 rounds to 3.0000000000000004: still 3
  EXPECT_EQ(selected_chunks(sel, 31), 4);   // ceil(3.1)
  EXPECT_EQ(selected_chunks(sel, 500), 8);  // capped at top_k
}

TEST(ChunkSelection, SqrtAndLog2RulesOfTheCandidates) {
  const ChunkSelection sq{16, 64, 0, ChunkBudgetRule::sqrt, 1.0, 1};
  EXPECT_EQ(selected_chunks(sq, 0), 0);
  EXPECT_EQ(selected_chunks(sq, 1), 1);
  EXPECT_EQ(selected_chunks(sq, 4), 2);  // sqrt 4 = 2 exactly
  EXPECT_EQ(selected_chunks(sq, 5), 3);  // ceil(2.236)
  EXPECT_EQ(selected_chunks(sq, 100), 10);
  const ChunkSelection sq2{16, 4, 0, ChunkBudgetRule::sqrt, 2.0, 1};
  EXPECT_EQ(selected_chunks(sq2, 2), 2);    // ceil(2.83) = 3 -> min(C, 3)
  EXPECT_EQ(selected_chunks(sq2, 100), 4);  // capped at the slots
  const ChunkSelection lg{16, 64, 0, ChunkBudgetRule::log2, 1.0, 1};
  EXPECT_EQ(selected_chunks(lg, 0), 0);
  EXPECT_EQ(selected_chunks(lg, 1), 1);  // log2 1 = 0 -> min_k
  EXPECT_EQ(selected_chunks(lg, 2), 1);
  EXPECT_EQ(selected_chunks(lg, 8), 3);
  EXPECT_EQ(selected_chunks(lg, 9), 4);  // ceil(3.17)
  EXPECT_EQ(selected_chunks(lg, 1024), 10);
  EXPECT_EQ(parse_chunk_budget_rule("sqrt"), ChunkBudgetRule::sqrt);
  EXPECT_EQ(parse_chunk_budget_rule("log2"), ChunkBudgetRule::log2);
  EXPECT_EQ(to_string(ChunkBudgetRule::log2), "log2");
  EXPECT_EQ(describe(lg), "chunk_size=16 top_k=64 window=0 budget=log2 coefficient=1 min_k=1");
}

TEST(ChunkSelection, RetrievedTokensCountsEveryQuery) {
  // S = 2, k = 1, n = 7: t = 0,1 read nothing, t = 2..6 read one chunk of 2 tokens.
  EXPECT_EQ(retrieved_tokens(ChunkSelection{2, 1, 0}, 7), 10);
  // S = 2, k = 2: t = 2,3 have 1 candidate, t = 4,5 and 6 have 2 -> (2 + 6) * 2.
  EXPECT_EQ(retrieved_tokens(ChunkSelection{2, 2, 0}, 7), 16);
  EXPECT_EQ(num_chunks(ChunkSelection{2, 2, 0}, 7), 3);
}

TEST(ChunkSelection, ChoosingQueriesHaveMoreCandidatesThanTheyRead) {
  // S = 2, k = 1, n = 7: C(t) = 0,0,1,1,2,2,3 -> t = 4, 5, 6 choose.
  EXPECT_EQ(choosing_queries(ChunkSelection{2, 1, 0}, 7), 3);
  // k = 2: only t = 6 (3 candidates).
  EXPECT_EQ(choosing_queries(ChunkSelection{2, 2, 0}, 7), 1);
  // A fraction budget chooses as soon as ceil(f C) < C: f = 0.5, min_k 1 -> from C = 2.
  EXPECT_EQ(choosing_queries(ChunkSelection{2, 8, 0, ChunkBudgetRule::fraction, 0.5, 1}, 7), 3);
}

TEST(ChunkSelection, BadFieldsAreNamed) {
  auto message = [](const ChunkSelection& s) {
    try {
      validate(s);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("valid");
  };
  EXPECT_EQ(message(ChunkSelection{}), "valid");
  EXPECT_EQ(message(ChunkSelection{0, 8, 0}), "chunk size S must be >= 1, got 0");
  EXPECT_EQ(message(ChunkSelection{64, 0, 0}), "top-k must be >= 1, got 0");
  EXPECT_EQ(message(ChunkSelection{64, 8, -1}), "chunk selection window W must be >= 0, got -1");
  EXPECT_NE(message(ChunkSelection{64, 8, 0, ChunkBudgetRule::fraction, 0.0, 1})
                .find("fraction must be in (0, 1]"),
            std::string::npos);
  EXPECT_NE(message(ChunkSelection{64, 8, 0, ChunkBudgetRule::fraction, 0.5, 9}).find("min_k"),
            std::string::npos);
  EXPECT_EQ(message(ChunkSelection{64, 8, 0, ChunkBudgetRule::sqrt, 0.0, 1}),
            "chunk budget coefficient of the sqrt rule must be a positive finite number, got "
            "0.000000");
  EXPECT_NE(message(ChunkSelection{64, 8, 0, ChunkBudgetRule::log2, 1.0, 0}).find("min_k"),
            std::string::npos);
  EXPECT_THROW(parse_chunk_budget_rule("dynamic"), std::invalid_argument);
  EXPECT_EQ(parse_chunk_budget_rule("fraction"), ChunkBudgetRule::fraction);
}

}  // namespace
}  // namespace reach::pattern
