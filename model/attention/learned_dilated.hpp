// Window plus dilated offsets with a learned alpha per layer: alpha = softplus(theta), real
// offsets alpha * b, keys and values interpolated between the floor and floor + 1 distances,
// so theta gets a gradient.
#pragma once

#include <optional>

#include "model/attention/attention_layer.hpp"

namespace reach::model::attention {

class LearnedDilatedAttention : public AttentionLayer {
 public:
  LearnedDilatedAttention(const ModelConfig& config, int64_t layer);
  double alpha() const override;
  std::vector<int64_t> integer_offsets() const override;
  torch::Tensor host_value() const override;
  void use_host_value_once(double alpha) override { next_alpha_ = alpha; }
  void freeze_schedule() override;

 protected:
  // A rungs budget is an error unless frozen: fractional rungs have no integer cut.
  torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                       const ForwardContext& context) override;
  // Decode steps through the single-query kernel (model/attention/cached_decode.hpp).
  torch::Tensor attend_cached(const torch::Tensor& q, const LayerKvCache& cache,
                              const ForwardContext& context) override;

 private:
  torch::Tensor theta_;               // registered as "theta": alpha = softplus(theta)
  std::optional<double> next_alpha_;  // use_host_value_once
  torch::Tensor frozen_;  // freeze_schedule: integer distances (float64); else undefined
};

}  // namespace reach::model::attention
