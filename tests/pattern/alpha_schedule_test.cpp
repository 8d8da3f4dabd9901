#include "pattern/alpha_schedule.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

namespace reach::pattern {
namespace {

TEST(AlphaSchedule, FixedIsConstant) {
  const auto a = layer_alphas({AlphaSchedule::fixed, 5, 1.5, 0, 0});
  EXPECT_EQ(a, std::vector<double>(5, 1.5));
}

TEST(AlphaSchedule, StaggerIsLinearFromMinToMax) {
  const auto a = layer_alphas({AlphaSchedule::stagger, 5, 0, 1.0, 3.0});
  EXPECT_EQ(a, (std::vector<double>{1.0, 1.5, 2.0, 2.5, 3.0}));
  EXPECT_EQ(layer_alphas({AlphaSchedule::stagger, 1, 0, 1.0, 3.0}), std::vector<double>{1.0});
}

TEST(AlphaSchedule, CoprimeStepIsCoprimeAndNearLOverPhi) {
  EXPECT_EQ(coprime_step(16), 9);  // 16 / phi = 9.89 -> 10 shares 2 with 16; 9 is coprime
  EXPECT_EQ(coprime_step(2), 1);
  EXPECT_EQ(coprime_step(4), 3);  // 4 / phi = 2.47: 2 shares a factor, so 3
  for (int64_t layers = 3; layers <= 64; ++layers) {
    const int64_t s = coprime_step(layers);
    EXPECT_EQ(std::gcd(s, layers), 1) << layers;
    EXPECT_LE(std::abs(static_cast<double>(s) - static_cast<double>(layers) / 1.6180339887), 3.0)
        << layers;
  }
}

TEST(AlphaSchedule, CoprimeIsAPermutationOfTheStagger) {
  const ScheduleSpec spec{AlphaSchedule::coprime, 16, 0, 1.0, 4.0};
  auto permuted = layer_alphas(spec);
  auto stagger = layer_alphas({AlphaSchedule::stagger, 16, 0, 1.0, 4.0});
  EXPECT_NE(permuted, stagger);
  const int64_t s = coprime_step(16);
  for (int64_t l = 0; l < 16; ++l) EXPECT_EQ(permuted[l], stagger[(l * s) % 16]);
  std::sort(permuted.begin(), permuted.end());
  EXPECT_EQ(permuted, stagger);
}

TEST(AlphaSchedule, LearnedStartsFromTheStagger) {
  EXPECT_EQ(layer_alphas({AlphaSchedule::learned, 4, 0, 1.0, 2.5}),
            layer_alphas({AlphaSchedule::stagger, 4, 0, 1.0, 2.5}));
}

TEST(AlphaSchedule, RejectsBadInput) {
  EXPECT_THROW(layer_alphas({AlphaSchedule::fixed, 0, 1.0, 1, 1}), std::invalid_argument);
  EXPECT_THROW(layer_alphas({AlphaSchedule::fixed, 4, -1.0, 1, 1}), std::invalid_argument);
  EXPECT_THROW(layer_alphas({AlphaSchedule::stagger, 4, 1.0, 3.0, 1.0}), std::invalid_argument);
  EXPECT_THROW(layer_alphas({AlphaSchedule::stagger, 4, 1.0, 0.0, 1.0}), std::invalid_argument);
  EXPECT_THROW(parse_alpha_schedule("random"), std::invalid_argument);
}

}  // namespace
}  // namespace reach::pattern
