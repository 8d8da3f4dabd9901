// Attention whose weights come from reach's entmax operator: alpha-entmax, ASEntmax or SSMax
// (docs/entmax.md), or softmax with an ALiBi / NAPE bias over a window or dilated key set.
// The key set is any of dense (a window covering every key), window, or window plus static
// dilated offsets.
#pragma once

#include <utility>

#include "model/attention/attention_layer.hpp"
#include "model/attention/device_constant.hpp"

namespace reach::model::attention {

class EntmaxAttention : public AttentionLayer {
 public:
  EntmaxAttention(const ModelConfig& config, int64_t layer);
  double alpha() const override { return alpha_; }
  std::vector<int64_t> integer_offsets() const override { return offsets_; }

 protected:
  // Honours budget.rungs on dilated key sets.
  torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                       const ForwardContext& context) override;
  // Decode steps through the single-query kernel (model/attention/cached_decode.hpp); with
  // per-query scaling, the generic path (the kernel takes per-head beta, gamma only).
  torch::Tensor attend_cached(const torch::Tensor& q, const LayerKvCache& cache,
                              const ForwardContext& context) override;
  // With per-query scaling, beta and gamma of this call's queries come from x first.
  AttentionOutput compute(const torch::Tensor& x, ForwardContext& context) override;

 private:
  // delta, beta and gamma of the log-n scaling as the op takes them for `queries` queries
  // (NAPE: c = 1 on ALiBi heads; per query: [B, H, queries], earlier positions of a decode
  // call, whose outputs are dropped, get beta = 0).
  struct Scaling {
    torch::Tensor delta, beta, gamma;
  };
  Scaling scaling(int64_t queries, const torch::Device& device) const;
  // alpha per head as the op takes it on `device` (learned: 1 + sigmoid(theta)); undefined for
  // softmax.
  torch::Tensor alphas(const torch::Device& device) const;
  double alpha_ = 0;
  std::vector<int64_t> offsets_;
  torch::Tensor distances_;  // offsets_ as float64 (empty: window or dense)
  // The constants below are made on the CPU and handed to the op on the activations' device
  // (DeviceConstant: copied once, not in every call).
  DeviceConstant slopes_;        // [heads] float64 (0 for NoPE heads); undefined: no bias
  DeviceConstant nope_heads_;    // [heads] float32, 1 where the slope is 0 (NAPE's NoPE heads)
  DeviceConstant entmax_alpha_;  // [heads] float64, entmax / asentmax with a fixed alpha
  DeviceConstant ssmax_delta_, ssmax_gamma_;  // [heads] SSMax's fixed delta = 0, gamma = 1
  torch::Tensor delta_, beta_, gamma_;        // [heads] log-n scaling parameters (ssmax: beta)
  torch::Tensor alpha_logit_;                 // [heads] learned alpha = 1 + sigmoid(alpha_logit)
  // Per-query scaling: beta_i = softplus(scale_beta(h_i)), gamma_i = 2 tanh(scale_gamma(h_i)),
  // and this call's values ([B, H, T], set by compute).
  torch::nn::Linear scale_beta_{nullptr}, scale_gamma_{nullptr};
  torch::Tensor query_beta_, query_gamma_;
};

}  // namespace reach::model::attention
