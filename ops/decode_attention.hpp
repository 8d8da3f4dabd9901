// LibTorch binding of the single-query decode kernel (kernels/cpu/decode_attention.hpp):
// one new token per request over a preallocated KV cache, inference only (no autograd).
//
// q: [batch, heads, Q, head_dim], the last Q positions of each request (Q = 1: one new
// token); key_buffer, value_buffer: [batch, kv_heads, capacity, head_dim] contiguous, rows
// 0..lengths[b]-1 filled (the new tokens' own keys and values included); float32 or float64
// on the CPU (the C++ kernel); bfloat16, float32 or float64 on a CUDA GPU: bfloat16 and
// float32 softmax key sets with integer offsets run the CUDA decode kernel
// (kernels/cuda/decode_attention.hpp: one launch per layer, the cache read in place), dense
// causal attention over one length SDPA, and the rest (float64, fractional offsets) tensor ops
// (decode_attention_tensor_ops in the .cpp says how). Returns [batch, heads, Q, head_dim].
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace reach::ops {

struct DecodeAttentionOptions {
  int64_t window = 1;           // W (>= every length: dense causal attention)
  std::vector<double> offsets;  // the layer's distances beyond the window, ascending
  std::optional<double> scale;  // default 1 / sqrt(head_dim)
  // Budgets per request (empty: the trained key set); see kernels/decode_attention_params.hpp.
  std::vector<int64_t> windows;  // W_b
  std::vector<int64_t> rungs;    // K_b: the first K_b offsets
  std::vector<double> mass;      // p_b in (0, 1]: keep slots until their mass reaches p_b
  // Normaliser: softmax, or alpha-entmax with per-head alpha; optional log-n scaling and
  // ALiBi slopes. Per-head tensors: [heads], any floating dtype, on the CPU.
  bool entmax = false;
  torch::Tensor entmax_alpha, delta, beta, gamma, alibi_slopes;
  // Optional, CUDA: the lengths as int32 [batch] on q's device, equal to `lengths` (from a
  // DecodeLengths, which a step's layers share), so the kernel reads them without an upload
  // per layer; undefined: uploaded here.
  torch::Tensor device_lengths;
  // CUDA, with device_lengths: `lengths` are host upper bounds (>= the device lengths, e.g.
  // the capacity) and the kernel reads the true lengths from the device alone, so nothing on
  // the host depends on them (a decode step captured in a CUDA graph: infer/decode_graph).
  // Always the CUDA kernel (an error where it does not take the options); keys_read is empty.
  bool lengths_are_bounds = false;
};

// Which implementation ran (tests check that the kernel they judge is the one that ran).
enum class DecodeAttentionPath { cpu_kernel, cuda_kernel, cuda_sdpa, cuda_tensor_ops };

struct DecodeAttentionResult {
  torch::Tensor out;               // [batch, heads, Q, head_dim]
  std::vector<int64_t> keys_read;  // [batch * heads * Q]: slots whose value was read
  DecodeAttentionPath path = DecodeAttentionPath::cpu_kernel;
};

// The lengths of a decode step on a device, uploaded (one asynchronous copy from pinned
// memory) only when they differ from the last ones asked for: every layer of a step reads the
// same lengths, so one DecodeLengths per step uploads them once.
class DecodeLengths {
 public:
  // int32 [lengths.size()] on `device`; throws std::invalid_argument past 2^31 - 1.
  const torch::Tensor& on(const torch::Device& device, const std::vector<int64_t>& lengths);

 private:
  std::vector<int64_t> host_;
  torch::Tensor device_;
};

// Whether this build has the CUDA decode kernel (reach_ops compiled against a CUDA LibTorch
// with nvcc present).
bool decode_attention_has_cuda_kernel();

// Whether decode_attention runs these options on `device`: everything on the CPU; on a
// CUDA GPU softmax with fixed per-request budgets (windows, rungs), ALiBi and log-n scaling,
// not entmax nor the mass budget (callers fall back to a full forward over the cache).
bool decode_attention_supported(const torch::Device& device, const DecodeAttentionOptions& options);

// Throws std::invalid_argument naming the problem (shapes, dtypes, devices, budgets).
DecodeAttentionResult decode_attention(const torch::Tensor& q, const torch::Tensor& key_buffer,
                                       const torch::Tensor& value_buffer,
                                       const std::vector<int64_t>& lengths,
                                       const DecodeAttentionOptions& options);

}  // namespace reach::ops
