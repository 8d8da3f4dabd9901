#include "model/attention/dense.hpp"

#include <torch/version.h>

#include <cmath>
#include <limits>

#include "model/attention/cached_decode.hpp"

namespace reach::model::attention {

DenseAttention::DenseAttention(const ModelConfig& config, int64_t layer)
    : AttentionLayer(config, layer), slopes_(position_slopes(config.positions, config.heads)) {}

torch::Tensor DenseAttention::attend(const torch::Tensor& q, const torch::Tensor& k,
                                     const torch::Tensor& v, const ForwardContext& /*context*/) {
#if TORCH_VERSION_MAJOR >= 2
  // On a GPU, dense causal softmax is LibTorch's fused scaled_dot_product_attention
  // (FlashAttention for bf16); an ALiBi / NAPE bias takes the explicit path below.
  if (q.is_cuda() && !slopes_.defined()) {
    return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
  }
#endif
  const int64_t t = q.size(2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim()));
  // Queries [start, start + len) against keys [0, start + len).
  auto block = [&](int64_t start, int64_t len) {
    const int64_t keys = start + len;
    auto qb = q.narrow(2, start, len), kb = k.narrow(2, 0, keys), vb = v.narrow(2, 0, keys);
    auto scores = torch::matmul(qb, kb.transpose(-2, -1)) * scale;
    const auto index = torch::TensorOptions().dtype(torch::kLong).device(q.device());
    auto i = torch::arange(start, keys, index).unsqueeze(1);
    auto j = torch::arange(keys, index).unsqueeze(0);
    auto distance = i - j;  // [len, keys]
    if (slopes_.defined()) {
      auto bias = slopes_.on(q.device()).to(q.scalar_type()).view({1, -1, 1, 1}) *
                  distance.clamp_min(0).to(q.options());
      scores = scores - bias;
    }
    scores = scores.masked_fill(distance < 0, -std::numeric_limits<float>::infinity());
    return torch::matmul(torch::softmax(scores, -1), vb);
  };
  constexpr int64_t kEvalBlock = 1024;
  if (torch::GradMode::is_enabled() || t <= kEvalBlock) return block(0, t);
  std::vector<torch::Tensor> parts;
  for (int64_t start = 0; start < t; start += kEvalBlock) {
    parts.push_back(block(start, std::min(kEvalBlock, t - start)));
  }
  return torch::cat(parts, 2);
}

bool DenseAttention::attends_token_major(const torch::Tensor& q) const {
#if TORCH_VERSION_MAJOR >= 2
  return q.is_cuda() && !slopes_.defined();
#else
  (void)q;
  return false;
#endif
}

torch::Tensor DenseAttention::attend_cached(const torch::Tensor& q, const LayerKvCache& cache,
                                            const ForwardContext& context) {
  if (!decode_kernel_applies(q, context)) return AttentionLayer::attend_cached(q, cache, context);
  ops::DecodeAttentionOptions key_set;
  // Every key: with device lengths (a CUDA graph step) the host length is stale by the next
  // replay, so the capacity, which bounds every length.
  key_set.window = context.device_lengths.defined() ? cache.capacity : cache.length();
  key_set.alibi_slopes = slopes_.cpu();
  return decode_with_kernel(q, cache, key_set, context, /*windowed=*/false);
}

}  // namespace reach::model::attention
