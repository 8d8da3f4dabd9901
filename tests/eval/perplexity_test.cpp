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

}  // namespace
}  // namespace reach::eval
