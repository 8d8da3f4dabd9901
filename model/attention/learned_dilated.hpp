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

 protected:
  // A rungs budget is an error: fractional rungs have no integer cut (use a static schedule).
  torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                       const ForwardContext& context) override;

 private:
  torch::Tensor theta_;               // registered as "theta": alpha = softplus(theta)
  std::optional<double> next_alpha_;  // use_host_value_once
};

}  // namespace reach::model::attention
