// Local window attention: each query sees the W keys ending at itself (softmax, no offsets).
#pragma once

#include "model/attention/attention_layer.hpp"

namespace reach::model::attention {

class WindowAttention : public AttentionLayer {
 public:
  WindowAttention(const ModelConfig& config, int64_t layer);

 protected:
  bool reads_grouped_kv() const override { return true; }  // the dilated op reads K/V groups
  torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                       const ForwardContext& context) override;
  // Decode steps through the single-query kernel (model/attention/cached_decode.hpp).
  torch::Tensor attend_cached(const torch::Tensor& q, const LayerKvCache& cache,
                              const ForwardContext& context) override;

 private:
  torch::Tensor no_offsets_;  // the dilated op with an empty offset list is the window
};

}  // namespace reach::model::attention
