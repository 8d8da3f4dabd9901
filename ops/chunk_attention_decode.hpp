// LibTorch binding of single-query chunk-attention decode (kernels/cpu/chunk_decode_attention.hpp):
//   reach::chunk_attention_decode(Tensor q, Tensor r, Tensor k_cache, Tensor v_cache,
//       Tensor landmarks, Tensor lengths, int chunk_size, int top_k, int window=0,
//       str budget="fixed", float fraction=1.0, int min_k=1, str weighting="softmax",
//       float? scale=None, float? retrieval_scale=None, Tensor? top_ks=None,
//       Tensor? masses=None) -> Tensor
// q: [B, Hq, d] (one new token per request) or [B, Hq, Q, d] (the newest Q tokens of each
// request); r: [B, Hkv, dr] or [B, Hkv, Q, dr]; k_cache, v_cache: [B, Hkv, capacity, d];
// landmarks: [B, Hkv, landmark_capacity, dr] (>= capacity / S rows); lengths: int64 [B],
// request b's queries are at positions lengths[b] - Q .. lengths[b] - 1; top_ks: int64 [B]
// per-request k (<= top_k); masses: float64 [B] per-request chunk mass in (0, 1] (the dynamic
// budget, kernels/cpu/chunk_decode_attention.hpp). float32 or float64, CPU; inference only
// (no autograd). The output (q's shape) holds those rows of reach::chunk_attention on the
// cached sequence (with a mass below 1: of its mass-cut version).
#pragma once

#include <c10/util/Optional.h>
#include <torch/torch.h>

#include "ops/chunk_attention.hpp"

namespace reach::ops {

torch::Tensor chunk_attention_decode(const torch::Tensor& q, const torch::Tensor& r,
                                     const torch::Tensor& k_cache, const torch::Tensor& v_cache,
                                     const torch::Tensor& landmarks, const torch::Tensor& lengths,
                                     const ChunkAttentionOptions& options,
                                     const c10::optional<torch::Tensor>& top_ks = c10::nullopt,
                                     const c10::optional<torch::Tensor>& masses = c10::nullopt,
                                     torch::Tensor* chunks_read = nullptr);
// chunks_read (when given) becomes int64 [B, Hkv, Q]: the chunks each query's group read.

}  // namespace reach::ops
