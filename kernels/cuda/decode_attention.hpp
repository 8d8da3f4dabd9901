// Decode attention over a KV cache on a CUDA GPU: the contract of
// kernels/decode_attention_params.hpp (the CPU kernel kernels/cpu/decode_attention.hpp) for
// softmax key sets with integer offsets, in one launch per layer and step. Raw device pointers,
// no torch and no CUDA headers here so C++ callers and tests can include it.
//
// R requests of different lengths (a device int32 array: nothing is built on the host per
// step), Q queries per request (its last Q positions), H query heads over Hkv KV heads (query
// head h reads KV head h / (H / Hkv) in place), any head_dim up to kDecodeMaxHeadDim, bf16 or
// fp32 inputs, fp32 arithmetic. A query's slots are its window w = 0..min(W_b, t + 1) - 1
// (key t - w) followed by its visible offsets (key t - x_k for the first K_b offsets with
// x_k >= W_b and x_k <= t); W_b >= the length is dense causal attention. Scores
// z = c * scale * q . k - m_h * distance (c: the log-n multiplier, m_h: the ALiBi slope), one
// softmax over the slots.
//
// A block scores up to kDecodeSlotsPerBlock slots of one query for up to kDecodeHeadsPerBlock
// query heads of one KV head (each key and value row is read once for the heads of its group):
// a thread per slot forms the scores (16-byte row loads), a warp per head the softmax, and each
// warp sums the values of a quarter of the slots (a lane per 32nd of the row: coalesced). A
// query with more slots (long dense rows) is split over several blocks (flash-decoding): each
// writes its partial maximum, sum and weighted values to a workspace and a second launch merges
// them, so one request at 128k context spreads over hundreds of blocks. The dilated families'
// W + K slots fit one block: one launch, no workspace.
//
// Learned (fractional) offsets are not taken: inference freezes them to integer offsets
// (Gpt::freeze_schedules); callers with real offsets use another path. Entmax and the dynamic
// mass budget are not taken either (the CPU kernel has them).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/cuda/dilated_attention.hpp"  // ScalarType

namespace reach::kernels::gpu {

inline constexpr int64_t kDecodeMaxOffsets = 64;
inline constexpr int64_t kDecodeMaxHeadDim = 256;
inline constexpr int64_t kDecodeSlotsPerBlock = 512;
inline constexpr int64_t kDecodeHeadsPerBlock = 8;

// The CUDA form of DecodeAttentionParams. Per-request arrays and per-head arrays live on the
// device; the offsets and the bounds (max_length, max_window) on the host. A device value
// outside its contract (a length outside queries..max_length, a window outside 1..max_window,
// rungs outside 0..K) is not read as some other key set: that query's output rows are NaN.
struct DecodeAttentionCudaArgs {
  int64_t batch = 0;     // requests R >= 1
  int64_t heads = 0;     // query heads H >= 1
  int64_t kv_heads = 0;  // Hkv >= 1, divides H
  int64_t head_dim = 0;  // 1..kDecodeMaxHeadDim
  int64_t capacity = 0;  // cache rows per (request, KV head), < 2^31
  int64_t queries = 1;   // Q >= 1 per request: its last Q positions

  const int32_t* lengths = nullptr;  // device [batch]: keys cached per request (the new included)
  int64_t max_length = 0;  // host bound: queries <= every length <= max_length <= capacity

  int64_t window = 1;                    // W >= 1 (>= every length: dense causal attention)
  const int32_t* windows = nullptr;      // device [batch] W_b, or null: W for every request
  int64_t max_window = 0;                // with windows: a host bound >= every W_b
  const int32_t* rung_limits = nullptr;  // device [batch] K_b in 0..K, or null: all K offsets
  const double* offsets = nullptr;       // host [K]: integers, strictly increasing, each >= W
  int64_t num_offsets = 0;               // K in 0..kDecodeMaxOffsets
  double scale = 1.0;                    // softmax scale, usually 1 / sqrt(head_dim)

  const double* alibi_slopes = nullptr;  // device [heads] >= 0, or null: no distance bias
  bool log_n_scaling = false;            // c = delta_h + beta_h * log(slots + 1)^gamma_h
  const double* delta = nullptr;         // device [heads], when log_n_scaling
  const double* beta = nullptr;          // device [heads], when log_n_scaling
  const double* gamma = nullptr;         // device [heads], when log_n_scaling

  // The largest window a request can have: max_window with per-request windows, else W.
  int64_t max_window_or_window() const { return windows ? max_window : window; }
};

// Empty when the kernel takes args (checked on the host alone), else a one-line message
// naming the problem: shapes, bounds, fractional or unordered offsets, missing pointers.
std::string decode_cuda_support_problem(const DecodeAttentionCudaArgs& args);

// Most slots a query can have under the host bounds: min(max_window, max_length) + K.
int64_t decode_attention_max_slots(const DecodeAttentionCudaArgs& args);
// Blocks one query's slots are split over (1: one launch, no workspace).
int64_t decode_attention_splits(const DecodeAttentionCudaArgs& args);
// Device bytes of scratch the split (flash-decoding) pass needs; 0 when no query is split.
size_t decode_attention_workspace_bytes(const DecodeAttentionCudaArgs& args);

// q, out: [batch, heads, queries, head_dim] of `type`; k_cache, v_cache: [batch, kv_heads,
// capacity, head_dim] of `type` (the model's preallocated cache, read in place).
// workspace: decode_attention_workspace_bytes(args) device bytes (null when that is 0).
// stream: a cudaStream_t (nullptr: the default stream). Throws std::invalid_argument on args
// the kernel does not take and std::runtime_error on a CUDA error.
void decode_attention_forward_cuda(const DecodeAttentionCudaArgs& args, ScalarType type,
                                   const void* q, const void* k_cache, const void* v_cache,
                                   void* out, void* workspace, void* stream);

}  // namespace reach::kernels::gpu
