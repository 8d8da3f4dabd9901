// Decode of hierarchical chunk sparse attention over a KV cache, on the CPU: the newest
// `queries` tokens of each request (one, for a decode step), batched over requests of
// different lengths.
//
// Request b has lengths[b] rows in its key/value cache (positions 0..lengths[b] - 1, the new
// tokens' own rows included) and the landmarks of its complete chunks. Its query i (of Q =
// queries) sits at t = lengths[b] - Q + i and computes exactly row t of the full operator
// (kernels/chunk_attention_params.hpp): candidates C(t) of the selection, the k(C) best by
// r_t . L_i, chunk weights, one softmax per selected chunk, zeros when there is no candidate.
// The budget is per request: top_ks[b] (when given) replaces the selection's top_k for that
// request (min_k is capped by it); masses[b] < 1 (when given) is the dynamic budget: of the
// k(C) selected chunks, only those whose weights (largest first) reach that share of the
// selected weights' total are read, their weights scaled to keep the total
// (chunk_row::mass_cut). Work per token O(C(t) dr + Hq k S d), memory O(k) per head: nothing
// grows with the context beyond the landmark scoring.
// Layout: q, out [B, Hq, Q, d]; r [B, Hkv, Q, dr]; k_cache, v_cache [B, Hkv, capacity, d];
// landmarks [B, Hkv, landmark_capacity, dr] (rows 0..floor(lengths[b] / S) - 1 filled).
#pragma once

#include <cstdint>
#include <string>

#include "kernels/chunk_attention_params.hpp"

namespace reach::kernels {

struct ChunkDecodeParams {
  int64_t batch = 0;                 // requests, >= 1
  int64_t query_heads = 0;           // Hq >= 1, a multiple of kv_heads
  int64_t kv_heads = 0;              // Hkv >= 1
  int64_t head_dim = 0;              // d >= 1
  int64_t retrieval_dim = 0;         // dr >= 1
  int64_t capacity = 0;              // cache rows per (request, kv head), >= every length
  int64_t landmark_capacity = 0;     // landmark rows per (request, kv head), >= capacity / S
  const int64_t* lengths = nullptr;  // [batch], each in 1..capacity
  pattern::ChunkSelection selection;
  const int64_t* top_ks = nullptr;  // [batch] k_b in 1..selection.top_k, or null
  const double* masses = nullptr;   // [batch] chunk mass p_b in (0, 1], or null (no cut)
  int64_t queries = 1;              // Q >= 1 newest positions per request (<= every length)
  ChunkWeighting weighting = ChunkWeighting::softmax;
  double scale = 1.0;            // token scores, usually 1 / sqrt(d)
  double retrieval_scale = 1.0;  // landmark scores, usually 1 / sqrt(dr)

  // The selection request b runs with (its own top_k).
  pattern::ChunkSelection selection_of(int64_t b) const;
};

// Empty when params are valid, else a one-line message naming the problem.
std::string validate_chunk_decode_params(const ChunkDecodeParams& params);

// chunks_read (may be null): [batch, kv_heads, queries], the chunks each query's group read.
// Throws std::invalid_argument when params are invalid.
template <typename T>
void chunk_decode_attention_cpu(const ChunkDecodeParams& params, const T* q, const T* r,
                                const T* k_cache, const T* v_cache, const T* landmarks, T* out,
                                int64_t* chunks_read);

}  // namespace reach::kernels
