#include "model/attention/dilated.hpp"

#include "model/attention/cached_decode.hpp"
#include "model/attention/layer_offsets.hpp"
#include "ops/dilated_attention.hpp"

namespace reach::model::attention {

DilatedAttention::DilatedAttention(const ModelConfig& config, int64_t layer)
    : AttentionLayer(config, layer) {
  check_reach(config);
  alpha_ = schedule_alpha(config, layer);
  offsets_ = layer_offsets(config, alpha_);
  distances_ = offsets_tensor(offsets_);
}

torch::Tensor DilatedAttention::attend(const torch::Tensor& q, const torch::Tensor& k,
                                       const torch::Tensor& v, const ForwardContext& context) {
  const int64_t window = budget_window(kernel_window(config()), context.budget);
  // On a GPU the output comes token-major: the output projection reads it without a permute.
  return ops::dilated_attention(q, k, v, window,
                                beyond_window(within_budget(distances_, context.budget), window),
                                c10::nullopt, /*token_major_out=*/q.is_cuda());
}

torch::Tensor DilatedAttention::attend_cached(const torch::Tensor& q, const LayerKvCache& cache,
                                              const ForwardContext& context) {
  if (!decode_kernel_applies(q, context)) return AttentionLayer::attend_cached(q, cache, context);
  ops::DecodeAttentionOptions key_set;
  key_set.window = kernel_window(config());
  key_set.offsets.assign(offsets_.begin(), offsets_.end());
  return decode_with_kernel(q, cache, key_set, context);
}

}  // namespace reach::model::attention
