// Dense causal softmax attention: every query sees every earlier key, with the ALiBi / NAPE
// distance bias when the positions scheme has one.
#pragma once

#include "model/attention/attention_layer.hpp"
#include "model/attention/device_constant.hpp"

namespace reach::model::attention {

class DenseAttention : public AttentionLayer {
 public:
  DenseAttention(const ModelConfig& config, int64_t layer);

 protected:
  // By matmul (LibTorch's fused SDPA on a GPU without a bias); without autograd (evaluation)
  // it runs in query blocks so long sequences need no T x T score matrix.
  torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                       const ForwardContext& context) override;
  // On a GPU without a bias (SDPA): yes.
  bool attends_token_major(const torch::Tensor& q) const override;
  // Decode steps through the single-query kernel (model/attention/cached_decode.hpp).
  torch::Tensor attend_cached(const torch::Tensor& q, const LayerKvCache& cache,
                              const ForwardContext& context) override;

 private:
  DeviceConstant slopes_;  // [heads] float64 (0 for NoPE heads); undefined: no bias
};

}  // namespace reach::model::attention
