// Shared by the batched-decode tests (batch_session_test, decode_graph_test): the micro model
// of each family with fixed weights, seeded prompts, the logit error measure and the error check.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/gpt.hpp"

namespace reach::infer::testing {

// The micro preset with offsets reaching 40 tokens (decode tests run past it), seed 21; a
// learned schedule comes frozen, as inference uses it.
inline model::Gpt micro_model(model::AttentionFamily attention,
                              model::AlphaSchedule schedule = model::AlphaSchedule::stagger,
                              model::Normalizer normalizer = model::Normalizer::softmax,
                              int64_t kv_heads = 0) {
  auto c = model::preset("micro");
  c.kv_heads = kv_heads;
  c.attention = attention;
  c.schedule = schedule;
  c.normalizer = normalizer;
  c.alpha_min = 1.0;
  c.alpha_max = 2.3;
  c.reach = 40;
  torch::manual_seed(21);
  model::Gpt net(c);
  net->eval();
  if (schedule == model::AlphaSchedule::learned) net->freeze_schedules();
  return net;
}

inline std::vector<int64_t> random_tokens(int64_t n, int64_t seed) {
  torch::manual_seed(static_cast<uint64_t>(seed));
  const auto t = torch::randint(0, 256, {n}, torch::kLong);
  return {t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + n};
}

// Largest absolute difference relative to the largest reference logit.
inline double relative_error(const torch::Tensor& got, const torch::Tensor& want) {
  return (got - want).abs().max().item<double>() / want.abs().max().item<double>();
}

inline void expect_error(const std::function<void()>& f, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "no error, expected: " << fragment;
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

}  // namespace reach::infer::testing
