// The paper's convention, pinned: every expected set below was printed by the authors' own
// functions (fib_base, pow2_base_reach_matched, attended_distances and make_factories' alpha
// rule in code/fib_attention.py of ccapps42/scaled-fibonacci-attention), run on these inputs.
#include "pattern/paper_convention.hpp"

#include <gtest/gtest.h>

#include <stdexcept>
#include <vector>

namespace reach::pattern {
namespace {

using Offsets = std::vector<int64_t>;

Offsets offsets_at(AlphaSchedule schedule, OffsetBase base, int64_t window, int64_t layer) {
  const auto alphas = paper_layer_alphas(schedule, 16);
  return paper_offsets({base, alphas[static_cast<size_t>(layer)], window, 1024});
}

TEST(PaperConvention, RoundsHalfToEvenLikePython) {
  EXPECT_EQ(round_half_even(44.5), 44);  // 0.5 * 89
  EXPECT_EQ(round_half_even(2.5), 2);
  EXPECT_EQ(round_half_even(3.5), 4);
  EXPECT_EQ(round_half_even(493.5), 494);
  EXPECT_EQ(round_half_even(-2.5), -2);
  EXPECT_EQ(round_half_even(12.4999), 12);
  EXPECT_EQ(round_half_even(12.5001), 13);
  EXPECT_THROW(round_half_even(1e300), std::invalid_argument);
}

TEST(PaperConvention, BaseIsFifteenFibonacciRungsOrPowersOfTwoBelowT) {
  const auto fib = paper_base(OffsetBase::fibonacci, 1 << 20);
  ASSERT_EQ(fib.size(), 15u);
  EXPECT_EQ(fib.front(), 1);
  EXPECT_EQ(fib[2], 3);
  EXPECT_EQ(fib.back(), 987);
  EXPECT_EQ(paper_base(OffsetBase::power_of_two, 1024),
            (Offsets{1, 2, 4, 8, 16, 32, 64, 128, 256, 512}));
  EXPECT_EQ(paper_base(OffsetBase::power_of_two, 1025).back(), 1024);
}

TEST(PaperConvention, FixedSetsAtTheCentralWindows) {
  EXPECT_EQ(offsets_at(AlphaSchedule::fixed, OffsetBase::fibonacci, 12, 0),
            (Offsets{13, 21, 34, 55, 89, 144, 233, 377, 610, 987}));
  EXPECT_EQ(offsets_at(AlphaSchedule::fixed, OffsetBase::power_of_two, 8, 5),
            (Offsets{16, 32, 64, 128, 256, 512}));
  EXPECT_EQ(paper_offsets({OffsetBase::fibonacci, 1.0, 12, 100}), (Offsets{13, 21, 34, 55, 89}));
}

TEST(PaperConvention, StaggerSetsIncludingTheHalfToEvenRungs) {
  const auto fib = OffsetBase::fibonacci;
  EXPECT_EQ(offsets_at(AlphaSchedule::stagger, fib, 12, 0),
            (Offsets{17, 28, 44, 72, 116, 188, 305, 494}));
  EXPECT_EQ(offsets_at(AlphaSchedule::stagger, fib, 12, 1),
            (Offsets{19, 31, 50, 82, 132, 214, 346, 559}));
  EXPECT_EQ(offsets_at(AlphaSchedule::stagger, fib, 12, 2),
            (Offsets{13, 22, 35, 56, 91, 148, 239, 386, 625}));
  EXPECT_EQ(offsets_at(AlphaSchedule::stagger, fib, 12, 7),
            (Offsets{13, 20, 33, 53, 86, 139, 225, 364, 590, 954}));
  EXPECT_EQ(offsets_at(AlphaSchedule::stagger, fib, 12, 15),
            (Offsets{20, 32, 51, 82, 134, 216, 350, 566, 915}));
  const auto pow2 = OffsetBase::power_of_two;
  EXPECT_EQ(offsets_at(AlphaSchedule::stagger, pow2, 8, 0), (Offsets{16, 32, 64, 128, 256}));
  EXPECT_EQ(offsets_at(AlphaSchedule::stagger, pow2, 8, 1), (Offsets{9, 18, 36, 73, 145, 290}));
  EXPECT_EQ(offsets_at(AlphaSchedule::stagger, pow2, 8, 15),
            (Offsets{12, 24, 48, 96, 192, 384, 768}));
}

TEST(PaperConvention, CoprimeReassignmentUsesStrideSevenAtSixteenLayers) {
  EXPECT_EQ(paper_coprime_step(16), 7);
  EXPECT_EQ(paper_coprime_step(12), 5);
  EXPECT_EQ(paper_coprime_step(2), 1);
  EXPECT_THROW(paper_coprime_step(4), std::invalid_argument);
  EXPECT_THROW(paper_coprime_step(6), std::invalid_argument);
  const auto fib = OffsetBase::fibonacci;
  EXPECT_EQ(offsets_at(AlphaSchedule::coprime, fib, 12, 1),
            (Offsets{13, 20, 33, 53, 86, 139, 225, 364, 590, 954}));
  EXPECT_EQ(offsets_at(AlphaSchedule::coprime, fib, 12, 2),
            (Offsets{19, 30, 49, 79, 128, 206, 334, 540, 874}));
  EXPECT_EQ(offsets_at(AlphaSchedule::coprime, fib, 12, 15),
            (Offsets{14, 23, 37, 61, 98, 158, 256, 415, 671}));
  EXPECT_EQ(offsets_at(AlphaSchedule::coprime, OffsetBase::power_of_two, 8, 15),
            (Offsets{9, 18, 35, 70, 141, 282, 563}));
}

TEST(PaperConvention, AlphasSpanHalfToOneAndAHalf) {
  const auto stagger = paper_layer_alphas(AlphaSchedule::stagger, 16);
  EXPECT_EQ(stagger.front(), 0.5);
  EXPECT_EQ(stagger.back(), 1.5);
  EXPECT_DOUBLE_EQ(stagger[1], 0.5 + 1.0 / 15.0);
  EXPECT_EQ(paper_layer_alphas(AlphaSchedule::stagger, 1), (std::vector<double>{1.0}));
  EXPECT_EQ(paper_layer_alphas(AlphaSchedule::learned, 3), (std::vector<double>(3, 1.0)));
  EXPECT_EQ(paper_layer_alphas(AlphaSchedule::fixed, 2), (std::vector<double>(2, 1.0)));
}

TEST(PaperConvention, AttendedDistancesIncludeTheWindowAndSelf) {
  const auto d = paper_attended_distances({OffsetBase::fibonacci, 1.0, 12, 1024});
  ASSERT_EQ(d.size(), 13u + 10u);
  EXPECT_EQ(d.front(), 0);
  EXPECT_EQ(d[12], 12);
  EXPECT_EQ(d[13], 13);
  EXPECT_EQ(d.back(), 987);
  // A context shorter than the window: distances up to T - 1 only.
  EXPECT_EQ(paper_attended_distances({OffsetBase::fibonacci, 1.0, 12, 5}),
            (Offsets{0, 1, 2, 3, 4}));
}

TEST(PaperConvention, LearnedColumnsSkipRoundedIntoWindowAndUsedFloors) {
  // alpha = 1 (theta = 0): integer targets; rungs 1..8 round into the window W = 12.
  const auto init = paper_learned_columns(1.0f, OffsetBase::fibonacci, 12, 1024);
  ASSERT_EQ(init.size(), 10u);
  EXPECT_EQ(init.front().lo, 13);
  EXPECT_EQ(init.front().frac, 0.0f);
  EXPECT_EQ(init.back().lo, 987);
  // alpha = 0.6: 0.6 * 21 = 12.6 rounds to 13 > W but floors to 12, inside the window: used.
  const auto a = paper_learned_columns(0.6f, OffsetBase::fibonacci, 12, 1024);
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(a.front().base_value, 34);
  EXPECT_EQ(a.front().lo, 20);
  EXPECT_NEAR(a.front().frac, 0.4f, 1e-5f);
  // floor(target) > T - 1 drops the rung; floor(target) == T - 1 keeps it.
  const auto t = paper_learned_columns(1.0f, OffsetBase::fibonacci, 12, 234);
  EXPECT_EQ(t.back().lo, 233);
}

TEST(PaperConvention, BadInputIsAClearError) {
  EXPECT_THROW(paper_offsets({OffsetBase::fibonacci, 0.0, 12, 1024}), std::invalid_argument);
  EXPECT_THROW(paper_offsets({OffsetBase::fibonacci, 1.0, -1, 1024}), std::invalid_argument);
  EXPECT_THROW(paper_offsets({OffsetBase::fibonacci, 1.0, 12, 0}), std::invalid_argument);
  EXPECT_THROW(parse_offset_convention("authors"), std::invalid_argument);
  EXPECT_EQ(parse_offset_convention("paper"), OffsetConvention::paper);
}

}  // namespace
}  // namespace reach::pattern
