// Attention whose weights come from reach's entmax operator: alpha-entmax, ASEntmax or SSMax
// (docs/entmax.md), or softmax with an ALiBi / NAPE bias over a window or dilated key set.
// The key set is any of dense (a window covering every key), window, or window plus static
// dilated offsets.
#pragma once

#include <utility>

#include "model/attention/attention_layer.hpp"

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
  // Decode steps through the single-query kernel (model/attention/cached_decode.hpp).
  torch::Tensor attend_cached(const torch::Tensor& q, const LayerKvCache& cache,
                              const ForwardContext& context) override;

 private:
  // delta and beta of the log-n scaling as the op takes them (NAPE: c = 1 on ALiBi heads).
  std::pair<torch::Tensor, torch::Tensor> scaling() const;
  double alpha_ = 0;
  std::vector<int64_t> offsets_;
  torch::Tensor distances_;             // offsets_ as float64 (empty: window or dense)
  torch::Tensor slopes_;                // [heads] float64 (0 for NoPE heads); undefined: no bias
  torch::Tensor entmax_alpha_;          // [heads] float64, entmax / asentmax
  torch::Tensor delta_, beta_, gamma_;  // [heads] log-n scaling (asentmax, ssmax)
};

}  // namespace reach::model::attention
