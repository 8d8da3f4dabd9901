#include "eval/perplexity.hpp"

#include <gtest/gtest.h>

#include <cmath>

namespace reach::eval {
namespace {

// A "model" that predicts uniform logits has NLL log(V) at every position.
TEST(Perplexity, UniformModelHasLogVocabNll) {
  std::vector<std::vector<int64_t>> docs{std::vector<int64_t>(100, 3), std::vector<int64_t>(30, 1)};
  auto uniform = [](const torch::Tensor& x) { return torch::zeros({x.size(0), x.size(1), 16}); };
  const auto r = evaluate_lengths(uniform, docs, {10, 40}, 1000);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].windows, 9 + 2);  // 99/10 from the first doc, 29/10 from the second
  EXPECT_EQ(r[1].windows, 2);      // only the first doc is >= 41 tokens
  EXPECT_NEAR(r[0].mean_nll, std::log(16.0), 1e-12);
  EXPECT_NEAR(r[1].perplexity, 16.0, 1e-9);
  EXPECT_EQ(r[1].bucket_nll.size(), 8u);
}

TEST(Perplexity, MaxTokensCapsWindowsAndOverlengthIsAnError) {
  std::vector<std::vector<int64_t>> docs{std::vector<int64_t>(1000, 0)};
  auto uniform = [](const torch::Tensor& x) { return torch::zeros({x.size(0), x.size(1), 4}); };
  EXPECT_EQ(evaluate_lengths(uniform, docs, {10}, 50)[0].windows, 5);
  EXPECT_THROW(evaluate_lengths(uniform, docs, {1000}, 5000), std::invalid_argument);
}

TEST(Perplexity, MaxTokensBelowOneIsAnError) {
  std::vector<std::vector<int64_t>> docs{std::vector<int64_t>(100, 0)};
  auto uniform = [](const torch::Tensor& x) { return torch::zeros({x.size(0), x.size(1), 4}); };
  EXPECT_THROW(evaluate_lengths(uniform, docs, {10}, 0), std::invalid_argument);
  EXPECT_THROW(evaluate_lengths(uniform, docs, {10}, -5), std::invalid_argument);
}

// Bits per byte = total NLL / ln 2 / bytes of the predicted tokens: with a uniform model over
// 16 ids every token costs 4 bits, so 2-byte tokens give 2 bits per byte and 1-byte ones 4.
TEST(Perplexity, BitsPerByteCountTheBytesOfThePredictedTokens) {
  std::vector<std::vector<int64_t>> docs{{0, 1, 0, 1, 0, 1, 0, 1, 0}};
  auto uniform = [](const torch::Tensor& x) { return torch::zeros({x.size(0), x.size(1), 16}); };
  std::vector<int64_t> bytes(16, 1);
  bytes[1] = 3;  // targets are 1, 0, 1, 0, ... : 4 of each in 8 predicted tokens
  const auto r = evaluate_lengths(uniform, docs, {8}, 8, 8192, bytes);
  ASSERT_EQ(r[0].tokens, 8);
  EXPECT_EQ(r[0].bytes, 4 * 3 + 4 * 1);
  EXPECT_NEAR(r[0].bits_per_byte, 8 * 4.0 / 16.0, 1e-12);
  // Without byte counts there is no bits-per-byte figure.
  EXPECT_EQ(evaluate_lengths(uniform, docs, {8}, 8)[0].bytes, 0);
}

TEST(Perplexity, HeldoutLengthIsCheckedUpFrontWithTheRemedy) {
  std::vector<std::vector<int64_t>> docs{std::vector<int64_t>(65, 0), std::vector<int64_t>(10, 0)};
  EXPECT_NO_THROW(require_heldout_length(docs, {16, 64}, "x"));
  try {
    require_heldout_length(docs, {16, 128, 64}, "raise data.heldout_fraction");
    ADD_FAILURE();
  } catch (const std::invalid_argument& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("length 128"), std::string::npos) << m;
    EXPECT_NE(m.find("129 tokens, the longest has 65"), std::string::npos) << m;
    EXPECT_NE(m.find("raise data.heldout_fraction"), std::string::npos) << m;
  }
}

}  // namespace
}  // namespace reach::eval
