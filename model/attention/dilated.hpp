// Window plus dilated offsets with a static alpha schedule (fixed, stagger, coprime): each
// query sees its window and the keys at the layer's integer offsets round(alpha * b),
// b from the Fibonacci or power-of-2 base, W <= d <= R. Softmax through reach's fused op.
#pragma once

#include "model/attention/attention_layer.hpp"

namespace reach::model::attention {

class DilatedAttention : public AttentionLayer {
 public:
  DilatedAttention(const ModelConfig& config, int64_t layer);
  double alpha() const override { return alpha_; }
  std::vector<int64_t> integer_offsets() const override { return offsets_; }

 protected:
  bool reads_grouped_kv() const override { return true; }  // the dilated op reads K/V groups
  // Honours budget.rungs (the nearest offsets only).
  torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                       const ForwardContext& context) override;
  // Decode steps through the single-query kernel (model/attention/cached_decode.hpp).
  torch::Tensor attend_cached(const torch::Tensor& q, const LayerKvCache& cache,
                              const ForwardContext& context) override;

 private:
  double alpha_;
  std::vector<int64_t> offsets_;
  torch::Tensor distances_;  // offsets_ as float64, as the op takes them
};

}  // namespace reach::model::attention
