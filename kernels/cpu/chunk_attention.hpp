// Hierarchical chunk sparse attention on the CPU (contract: kernels/chunk_attention_params.hpp).
//
// Forward, per (batch, KV group, query) in parallel: the candidate scores stream through a
// k-slot insertion list (top-k without storing the C(t) scores), then each query head of the
// group runs one softmax per selected chunk. Work O(n * (C/S * dr + Hq/Hkv * k * S * d)),
// memory O(n * k): nothing n x n is formed.
// Backward, two passes, no atomics: (1) per query: dq, the chunk-weight gradients, dr, and
// the per-slot terms dO . o_c and dL/ds_c the second pass needs; (2) per chunk: the queries
// that selected it (a counting sort of the saved indices) accumulate its dk, dv and dlandmark
// rows, so each row is written by one thread. Both passes recompute the chunk softmax from
// the saved lse. Accumulation is float64 for both dtypes.
#pragma once

#include <cstdint>

#include "kernels/chunk_attention_params.hpp"

namespace reach::kernels {

// out [B, Hq, n, d]. indices, weights and lse (shapes in the contract) may all be null
// (inference) or must all be given (training). Throws std::invalid_argument on invalid params.
template <typename T>
void chunk_attention_forward_cpu(const ChunkAttentionParams& params, const T* q, const T* k,
                                 const T* v, const T* r, const T* landmarks, T* out,
                                 int64_t* indices, T* weights, T* lse);

// Gradients of a scalar loss given grad_out = dL/dout and the forward's saved indices,
// weights and lse. Every gradient is overwritten (rows of a trailing partial chunk get 0).
template <typename T>
void chunk_attention_backward_cpu(const ChunkAttentionParams& params, const T* q, const T* k,
                                  const T* v, const T* r, const T* landmarks, const T* grad_out,
                                  const int64_t* indices, const T* weights, const T* lse, T* grad_q,
                                  T* grad_k, T* grad_v, T* grad_r, T* grad_landmarks);

}  // namespace reach::kernels
