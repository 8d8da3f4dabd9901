// One new token per request through the single-query decode kernel (ops/decode_attention):
// the families' attend_cached for a decode step, reading only the keys the family needs.
#pragma once

#include <torch/torch.h>

#include "model/attention/forward_context.hpp"
#include "model/attention/kv_cache.hpp"
#include "ops/decode_attention.hpp"

namespace reach::model::attention {

// Whether the decode op serves these queries (any number per request: the last q.size(2)
// positions of the cache): always on the CPU; on a CUDA GPU for softmax key sets without a
// dynamic mass budget (ops::decode_attention_supported); `entmax`: the layer normalises by
// alpha-entmax. Otherwise the layer runs its full forward over the cache.
bool decode_kernel_applies(const torch::Tensor& q, const ForwardContext& context,
                           bool entmax = false);

// q: [B, H, Q, hd] at positions cache.length() - Q .. cache.length() - 1 (their keys and
// values already appended).
// `key_set` gives the family's window, offsets and normaliser; the context's budget (rungs,
// mass, and the window when `windowed`: dense key sets have none) is applied on top, and the
// keys read are added to context.usage.
torch::Tensor decode_with_kernel(const torch::Tensor& q, const LayerKvCache& cache,
                                 ops::DecodeAttentionOptions key_set, const ForwardContext& context,
                                 bool windowed = true);

}  // namespace reach::model::attention
