#include "pattern/dilated_offsets.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

namespace reach::pattern {
namespace {

TEST(BaseSequence, FibonacciDistinctValues) {
  EXPECT_EQ(base_sequence(OffsetBase::fibonacci, 100),
            (std::vector<int64_t>{1, 2, 3, 5, 8, 13, 21, 34, 55, 89}));
}

TEST(BaseSequence, PowersOfTwo) {
  EXPECT_EQ(base_sequence(OffsetBase::power_of_two, 64),
            (std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64}));
}

TEST(IntegerOffsets, AlphaOneIsFibonacciInsideWindowAndReach) {
  EXPECT_EQ(integer_offsets({OffsetBase::fibonacci, 1.0, 64, 2048}),
            (std::vector<int64_t>{89, 144, 233, 377, 610, 987, 1597}));
}

TEST(IntegerOffsets, LowerBoundIsInclusiveOfWindow) {
  // W <= d: an offset equal to W (the first key left of the window) is kept.
  EXPECT_EQ(integer_offsets({OffsetBase::power_of_two, 1.0, 64, 256}),
            (std::vector<int64_t>{64, 128, 256}));
}

TEST(IntegerOffsets, RoundsHalfAwayFromZeroAndDeduplicates) {
  // alpha = 2.5: 2.5,5,7.5,12.5,20,32.5,52.5,85 -> 3,5,8,13,20,33,53,85.
  EXPECT_EQ(integer_offsets({OffsetBase::fibonacci, 2.5, 4, 90}),
            (std::vector<int64_t>{5, 8, 13, 20, 33, 53, 85}));
  // alpha = 0.3 makes several bases round to the same distance: unique and sorted.
  const auto small = integer_offsets({OffsetBase::fibonacci, 0.3, 1, 40});
  EXPECT_TRUE(std::is_sorted(small.begin(), small.end()));
  EXPECT_EQ(std::set<int64_t>(small.begin(), small.end()).size(), small.size());
  EXPECT_EQ(small.front(), 1);  // round(0.3*3) = 1
}

TEST(IntegerOffsets, ReachMatchedPowerOfTwoControl) {
  const auto fib = integer_offsets({OffsetBase::fibonacci, 1.0, 64, 4096});
  const auto pow2 = integer_offsets({OffsetBase::power_of_two, 1.0, 64, 4096});
  EXPECT_LE(fib.back(), 4096);
  EXPECT_LE(pow2.back(), 4096);
  EXPECT_EQ(pow2.back(), 4096);
}

TEST(FractionalOffsets, AreAlphaTimesBaseWithinBounds) {
  const auto fo = fractional_offsets({OffsetBase::fibonacci, 1.7, 16, 600});
  ASSERT_EQ(fo.distances.size(), fo.base_values.size());
  ASSERT_FALSE(fo.distances.empty());
  for (size_t i = 0; i < fo.distances.size(); ++i) {
    EXPECT_DOUBLE_EQ(fo.distances[i], 1.7 * static_cast<double>(fo.base_values[i]));
    EXPECT_GE(fo.distances[i], 16.0);
    EXPECT_LE(fo.distances[i], 600.0);
  }
}

TEST(DilationSpec, RejectsBadInput) {
  EXPECT_THROW(integer_offsets({OffsetBase::fibonacci, 0.0, 64, 2048}), std::invalid_argument);
  EXPECT_THROW(integer_offsets({OffsetBase::fibonacci, -1.0, 64, 2048}), std::invalid_argument);
  EXPECT_THROW(integer_offsets({OffsetBase::fibonacci, NAN, 64, 2048}), std::invalid_argument);
  EXPECT_THROW(integer_offsets({OffsetBase::fibonacci, 1.0, 0, 2048}), std::invalid_argument);
  EXPECT_THROW(integer_offsets({OffsetBase::fibonacci, 1.0, 64, 32}), std::invalid_argument);
  EXPECT_THROW(parse_offset_base("golden"), std::invalid_argument);
}

TEST(AttendedPairs, MatchesBruteForce) {
  for (int64_t n : {1, 5, 64, 100, 333}) {
    for (int64_t w : {1, 4, 64}) {
      std::vector<int64_t> offsets;
      for (int64_t d : integer_offsets({OffsetBase::fibonacci, 1.3, w, 300})) offsets.push_back(d);
      int64_t brute = 0;
      for (int64_t i = 0; i < n; ++i) {
        std::set<int64_t> keys;
        for (int64_t j = std::max<int64_t>(0, i - w + 1); j <= i; ++j) keys.insert(j);
        for (int64_t d : offsets) {
          if (i - d >= 0) keys.insert(i - d);
        }
        brute += static_cast<int64_t>(keys.size());
      }
      EXPECT_EQ(attended_pairs(n, w, offsets), brute) << "n=" << n << " w=" << w;
    }
  }
  EXPECT_DOUBLE_EQ(attended_fraction(10, 10, {}), 1.0);
}

}  // namespace
}  // namespace reach::pattern
