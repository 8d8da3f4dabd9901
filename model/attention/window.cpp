#include "model/attention/window.hpp"

#include "model/attention/cached_decode.hpp"
#include "model/attention/layer_offsets.hpp"
#include "ops/dilated_attention.hpp"

namespace reach::model::attention {

WindowAttention::WindowAttention(const ModelConfig& config, int64_t layer)
    : AttentionLayer(config, layer), no_offsets_(torch::empty({0}, torch::kFloat64)) {}

torch::Tensor WindowAttention::attend(const torch::Tensor& q, const torch::Tensor& k,
                                      const torch::Tensor& v, const ForwardContext& context) {
  return ops::dilated_attention(q, k, v, budget_window(kernel_window(config()), context.budget),
                                no_offsets_, c10::nullopt, /*token_major_out=*/q.is_cuda());
}

torch::Tensor WindowAttention::attend_cached(const torch::Tensor& q, const LayerKvCache& cache,
                                             const ForwardContext& context) {
  if (!decode_kernel_applies(q, context)) return AttentionLayer::attend_cached(q, cache, context);
  ops::DecodeAttentionOptions key_set;
  key_set.window = kernel_window(config());
  return decode_with_kernel(q, cache, key_set, context);
}

}  // namespace reach::model::attention
