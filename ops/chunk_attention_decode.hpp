// LibTorch binding of single-query chunk-attention decode (kernels/cpu/chunk_decode_attention.hpp):
//   reach::chunk_attention_decode(Tensor q, Tensor r, Tensor k_cache, Tensor v_cache,
//       Tensor landmarks, Tensor lengths, int chunk_size, int top_k, int window=0,
//       str budget="fixed", float fraction=1.0, int min_k=1, str weighting="softmax",
//       float? scale=None, float? retrieval_scale=None, Tensor? top_ks=None) -> Tensor
// q: [B, Hq, d] (one new token per request); r: [B, Hkv, dr]; k_cache, v_cache:
// [B, Hkv, capacity, d]; landmarks: [B, Hkv, landmark_capacity, dr] (>= capacity / S rows);
// lengths: int64 [B], request b's query is at position lengths[b] - 1; top_ks: int64 [B]
// per-request k (<= top_k). float32 or float64, CPU; inference only (no autograd). The output
// [B, Hq, d] is row lengths[b] - 1 of reach::chunk_attention on the cached sequence.
#pragma once

#include <c10/util/Optional.h>
#include <torch/torch.h>

#include "ops/chunk_attention.hpp"

namespace reach::ops {

torch::Tensor chunk_attention_decode(const torch::Tensor& q, const torch::Tensor& r,
                                     const torch::Tensor& k_cache, const torch::Tensor& v_cache,
                                     const torch::Tensor& landmarks, const torch::Tensor& lengths,
                                     const ChunkAttentionOptions& options,
                                     const c10::optional<torch::Tensor>& top_ks = c10::nullopt);

}  // namespace reach::ops
