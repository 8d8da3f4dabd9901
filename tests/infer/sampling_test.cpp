// Sampling: greedy is argmax, seeded sampling repeats, top-k / top-p restrict the support,
// sampled frequencies follow softmax(logits / T), bad parameters are clear errors.
#include "infer/sampling.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace reach::infer {
namespace {

std::vector<int64_t> draws(const SamplingParams& params, const std::vector<float>& logits,
                           int count) {
  Sampler sampler(params);
  std::vector<int64_t> ids;
  for (int i = 0; i < count; ++i) ids.push_back(sampler.next(logits));
  return ids;
}

const std::vector<float> kLogits{0.1f, 2.0f, -1.0f, 1.5f, 2.0f, 0.7f};

TEST(Sampling, GreedyIsArgmaxWithTiesToTheLowerId) {
  EXPECT_EQ(draws({}, kLogits, 3), (std::vector<int64_t>{1, 1, 1}));
}

TEST(Sampling, SameSeedSameTokensOtherSeedOtherTokens) {
  const SamplingParams a{1.0, 0, 1.0, 7}, b{1.0, 0, 1.0, 8};
  EXPECT_EQ(draws(a, kLogits, 64), draws(a, kLogits, 64));
  EXPECT_NE(draws(a, kLogits, 64), draws(b, kLogits, 64));
}

TEST(Sampling, FrequenciesFollowTheTemperedSoftmax) {
  const std::vector<float> logits{std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  for (double temperature : {1.0, 2.0}) {
    const auto ids = draws({temperature, 0, 1.0, 3}, logits, 40000);
    std::vector<double> want{std::pow(0.5, 1 / temperature), std::pow(0.3, 1 / temperature),
                             std::pow(0.2, 1 / temperature)};
    const double sum = want[0] + want[1] + want[2];
    for (int64_t k = 0; k < 3; ++k) {
      const double got = static_cast<double>(std::count(ids.begin(), ids.end(), k)) /
                         static_cast<double>(ids.size());
      // 40,000 draws: the standard error of a frequency is <= 0.0025; 0.015 is 6 of them.
      EXPECT_NEAR(got, want[static_cast<size_t>(k)] / sum, 0.015) << temperature << " " << k;
    }
  }
}

TEST(Sampling, TopKAndTopPRestrictTheSupport) {
  for (auto id : draws({5.0, 2, 1.0, 1}, kLogits, 500)) EXPECT_TRUE(id == 1 || id == 4) << id;
  for (auto id : draws({5.0, 1, 1.0, 1}, kLogits, 50)) EXPECT_EQ(id, 1);
  // The two top tokens hold 65% of the mass at T = 1 (32% each): p = 0.5 keeps only them.
  for (auto id : draws({1.0, 0, 0.5, 2}, kLogits, 500)) EXPECT_TRUE(id == 1 || id == 4) << id;
  for (auto id : draws({1.0, 0, 1e-6, 2}, kLogits, 50)) EXPECT_EQ(id, 1);
  // Without a restriction every token appears.
  const auto all = draws({5.0, 0, 1.0, 1}, kLogits, 2000);
  for (int64_t k = 0; k < 6; ++k) EXPECT_GT(std::count(all.begin(), all.end(), k), 0) << k;
}

TEST(Sampling, BadParametersAreClearErrors) {
  auto expect_error = [](SamplingParams p, const std::string& fragment) {
    try {
      validate(p);
      ADD_FAILURE() << "no error, expected: " << fragment;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_error({-0.5, 0, 1.0, 0}, "temperature must be >= 0");
  expect_error({NAN, 0, 1.0, 0}, "temperature must be >= 0");
  expect_error({1.0, -1, 1.0, 0}, "top_k must be >= 0");
  expect_error({1.0, 0, 0.0, 0}, "top_p must be in (0, 1]");
  expect_error({1.0, 0, 1.5, 0}, "top_p must be in (0, 1]");
  EXPECT_THROW(Sampler({-1.0, 0, 1.0, 0}), std::invalid_argument);
}

}  // namespace
}  // namespace reach::infer
