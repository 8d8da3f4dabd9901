// CUDA side of ops::decode_attention (ops/decode_attention.cpp), compiled only against a
// LibTorch with CUDA (ops/decode_attention_cuda.cpp); the kernel lives torch-free in
// kernels/cuda/decode_attention.*. Internal to ops/.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "ops/decode_attention.hpp"

namespace reach::ops::decode_cuda {

// Whether the kernel takes these inputs (the caller has validated them against the contract):
// bfloat16 or float32, head_dim <= 256, at most 64 offsets, all of them integers, softmax
// without a mass budget, a cache of fewer than 2^31 rows.
bool kernel_takes(const torch::Tensor& q, const DecodeAttentionOptions& options, int64_t capacity);

// The decode kernel over the cache in place. q: [batch, heads, Q, d] contiguous; key_buffer,
// value_buffer: [batch, kv_heads, capacity, d] contiguous, of q's dtype; lengths: the host
// copy (the bounds and the per-request budgets come from it); options.device_lengths, when
// defined, is what the kernel reads, else the lengths are uploaded. Returns [batch, heads, Q,
// d] of q's dtype.
torch::Tensor forward(const torch::Tensor& q, const torch::Tensor& key_buffer,
                      const torch::Tensor& value_buffer, const std::vector<int64_t>& lengths,
                      const DecodeAttentionOptions& options, double scale);

}  // namespace reach::ops::decode_cuda
