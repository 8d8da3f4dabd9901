// Hierarchical chunk sparse attention on a CUDA GPU: the contract of
// kernels/chunk_attention_params.hpp; raw device pointers, no torch and no CUDA headers
// here so C++ callers and tests can include it.
//
// Two paths. bfloat16 with the chunk size a multiple of 16 up to 64 runs the tensor-core,
// chunk-centric kernels of chunk_attention_tc.cuh (no float atomics, bitwise reproducible; the
// design is described there and in docs/chunk_attention.md). Everything else (float32, other
// chunk sizes) runs the fallback below.
//
// Fallback: one warp per (batch, KV group, query). Selection: each lane scores the candidates
// lane, lane + 32, ... against the landmarks and keeps its own top-k list; k rounds of a
// warp arg-max (score descending, ties to the lower chunk index) merge them into the
// query's slots (the lists live in shared memory). Attention: per head of the group and selected
// chunk, lanes own keys for the scores and the softmax, then dimensions for o_c. float32
// accumulation; the forward saves indices (int64), weights and lse (float32). Backward: the same
// warp per query recomputes each chunk's softmax from the lse, writes dq and dr, and adds dk, dv
// and dlandmarks into a float32 workspace with atomics (the order of the additions is not fixed, so
// float32 sums may differ in the last bits between runs); a second kernel converts the workspace to
// the gradients' type. Supported: head_dim 64 or 128, top_k <= 16, chunk size <= 512, retrieval_dim
// <= 512 (the shared memory of four warps stays under 48 KiB).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/chunk_attention_params.hpp"
#include "kernels/cuda/dilated_attention.hpp"  // ScalarType

namespace reach::kernels::gpu {

inline constexpr int64_t kMaxChunkSlots = 16;
inline constexpr int64_t kMaxChunkSize = 512;
inline constexpr int64_t kMaxRetrievalDim = 512;

// Empty when the CUDA kernels support params, else a message naming the problem.
std::string chunk_cuda_support_problem(const ChunkAttentionParams& params);

// q, k, v, r, landmarks, out of `type` (layouts in the contract); indices int64, weights
// and lse float32, all three null (inference) or all given. stream: a cudaStream_t
// (nullptr: the default stream). The tensor-core path's workspace comes from cudaMallocAsync
// on the stream (the overload below takes the caller's). Throws std::invalid_argument on bad params
// and std::runtime_error on a CUDA error.
void chunk_attention_forward_cuda(const ChunkAttentionParams& params, ScalarType type,
                                  const void* q, const void* k, const void* v, const void* r,
                                  const void* landmarks, void* out, int64_t* indices,
                                  float* weights, float* lse, void* stream);

// Whether (params, type) runs the tensor-core path (chunk_attention_tc.cuh): bfloat16, chunk
// size a multiple of 16 up to 64, B * Hkv * n * top_k < 2^31. Everything else the CUDA kernels
// support runs the fallback kernels.
bool chunk_attention_uses_tensor_cores(const ChunkAttentionParams& params, ScalarType type);

// Device bytes of scratch the forward needs (inference: indices, weights and lse are null, so
// the selection lives in the workspace too). Base 16-byte aligned.
size_t chunk_attention_forward_workspace_bytes(const ChunkAttentionParams& params, ScalarType type,
                                               bool inference);

// The forward with a caller's workspace of chunk_attention_forward_workspace_bytes (it may be
// null when the fallback kernels run).
void chunk_attention_forward_cuda(const ChunkAttentionParams& params, ScalarType type,
                                  const void* q, const void* k, const void* v, const void* r,
                                  const void* landmarks, void* out, int64_t* indices,
                                  float* weights, float* lse, void* workspace, void* stream);

// Device bytes of scratch the backward needs for `type` (16-byte aligned base); without a type,
// the larger of the two.
size_t chunk_attention_backward_workspace_bytes(const ChunkAttentionParams& params,
                                                ScalarType type);
size_t chunk_attention_backward_workspace_bytes(const ChunkAttentionParams& params);

// Every gradient is overwritten (rows of a trailing partial chunk get 0).
void chunk_attention_backward_cuda(const ChunkAttentionParams& params, ScalarType type,
                                   const void* q, const void* k, const void* v, const void* r,
                                   const void* landmarks, const void* grad_out,
                                   const int64_t* indices, const float* weights, const float* lse,
                                   void* grad_q, void* grad_k, void* grad_v, void* grad_r,
                                   void* grad_landmarks, void* workspace, void* stream);

}  // namespace reach::kernels::gpu
