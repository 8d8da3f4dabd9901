// The operator contract shared by the CPU and CUDA kernels of hierarchical chunk sparse
// attention (docs/chunk_attention.md).
//
// Tensors are contiguous, batch-major:
//   q, out      [B, Hq, n, d]    token queries (query head h reads KV head h / (Hq / Hkv))
//   k, v        [B, Hkv, n, d]   chunk keys/values: chunk i is rows iS..(i+1)S-1
//   r           [B, Hkv, n, dr]  retrieval queries, one per KV-head group
//   landmarks   [B, Hkv, n/S, dr]  one per complete chunk (a trailing partial chunk has none)
// For the query at t of group g: the candidates are chunks 0..C(t)-1
// (pattern/chunk_selection.hpp), scored s_i = retrieval_scale * r_t . L_i; the k(C(t))
// highest are selected (ties: the lower chunk index first) and kept in that order in the
// query's slots. Their weights w are softmax(s) over the selected scores, or stick-breaking
// (nearest chunk first: w_c = sigmoid(s_c) * prod over nearer selected c' of
// (1 - sigmoid(s_c'))). Each query head h of the group attends with one softmax per
// selected chunk over its S tokens (no mask: the chunk is wholly past),
//   o_c = sum_j softmax_j(scale * q_t . k_j) v_j,   out_t = sum_c w_c o_c.
// A query with no candidate (t < S, or every chunk inside the window) outputs zeros: the
// model adds its local-window path separately. Selection and weights are shared by the
// heads of a group; the selected indices are not differentiable.
// Saved for the backward (all optional in inference): indices [B, Hkv, n, K] (-1 = empty
// slot), weights [B, Hkv, n, K] (0 in empty slots), lse [B, Hq, n, K] (log-sum-exp of each
// chunk's scores), K = selection.top_k.
// Nothing here depends on torch, so kernels build and test without LibTorch.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include "pattern/chunk_selection.hpp"

namespace reach::kernels {

enum class ChunkWeighting { softmax, stick_breaking };

// Parses "softmax" / "stick_breaking"; throws std::invalid_argument.
ChunkWeighting parse_chunk_weighting(const std::string& name);
std::string to_string(ChunkWeighting weighting);

struct ChunkAttentionParams {
  int64_t batch = 0;          // B >= 1
  int64_t query_heads = 0;    // Hq >= 1, a multiple of kv_heads
  int64_t kv_heads = 0;       // Hkv >= 1
  int64_t seq_len = 0;        // n >= 1
  int64_t head_dim = 0;       // d >= 1
  int64_t retrieval_dim = 0;  // dr >= 1
  pattern::ChunkSelection selection;
  ChunkWeighting weighting = ChunkWeighting::softmax;
  double scale = 1.0;            // token scores, usually 1 / sqrt(d)
  double retrieval_scale = 1.0;  // landmark scores, usually 1 / sqrt(dr)

  int64_t chunks() const { return seq_len / selection.chunk_size; }
  int64_t slots() const { return selection.top_k; }
  int64_t group_size() const { return query_heads / kv_heads; }
};

// Empty when valid, else a one-line message naming the problem.
std::string validate_chunk_params(const ChunkAttentionParams& params);

// The checks the full and the decode operators share: every named size >= 1, query heads a
// multiple of kv heads, a valid selection. Empty when fine, else the first problem.
std::string validate_chunk_heads(std::initializer_list<std::pair<const char*, int64_t>> sizes,
                                 int64_t query_heads, int64_t kv_heads,
                                 const pattern::ChunkSelection& selection);

}  // namespace reach::kernels
