// The operator contract of single-query decode attention over a KV cache.
//
// One new token per request. Request b has lengths[b] keys in its cache (positions
// 0..t, t = lengths[b] - 1, the new token's own key and value already appended) and one
// query per head at position t. Its key set is that of the full operator
// (kernels/dilated_attention_params.hpp) at row t, under the request's budget:
//   * window slots w = 0..min(W_b, t + 1) - 1: key t - w (distance w);
//   * offset slots k = 0..K_b - 1 with x_k >= W_b: the key at real distance x_k, its
//     key/value interpolated between rows t - floor(x_k) and t - floor(x_k) - 1 as in the
//     full operator, visible when t >= ceil(x_k).
// W_b is windows[b] (or window), K_b is rung_limits[b] (or all K offsets): the budget of
// keys a query reads is a run-time parameter per request; W_b >= lengths[b] is dense
// causal attention. Offsets inside a widened window (x_k < W_b) are dropped: their keys
// are already window slots.
// Logits z_j = c * scale * q . k_j - m_h * distance_j, with c = 1, or with log-n scaling
// c = delta_h + beta_h * log(n + 1)^gamma_h (n the number of visible slots, as the full
// entmax operator does), and m_h the head's ALiBi slope (0 without slopes). Normalised by
// softmax, or by alpha-entmax with the head's alpha.
// Dynamic budget: when mass[b] < 1, the slots are ranked by probability and only the
// smallest prefix whose probability mass reaches mass[b] is kept, renormalised (ties at
// the cut keep the earlier slot). mass[b] = 1 keeps every slot.
// Several queries per request (queries = Q > 1): the last Q positions of request b,
// t = lengths[b] - Q .. lengths[b] - 1, each with the key set of its own row (what a full
// forward computes at those rows; used to score a whole window under a dynamic budget).
// Layout: q and out [batch, heads, Q, d]; caches [batch, kv_heads, capacity, d] (rows
// 0..lengths[b]-1 filled); query head h reads kv head h / (heads / kv_heads).
// Nothing here depends on torch.
#pragma once

#include <cstdint>
#include <string>

namespace reach::kernels {

struct DecodeAttentionParams {
  int64_t batch = 0;                 // requests, >= 1
  int64_t heads = 0;                 // query heads, >= 1
  int64_t kv_heads = 0;              // >= 1, divides heads
  int64_t head_dim = 0;              // d >= 1
  int64_t capacity = 0;              // cache rows per (request, kv head), >= every length
  const int64_t* lengths = nullptr;  // [batch], each in queries..capacity
  int64_t queries = 1;               // Q >= 1 queries per request: its last Q positions

  int64_t window = 1;               // W >= 1, every request's window unless `windows`
  const double* offsets = nullptr;  // K real distances, strictly increasing, each >= W
  int64_t num_offsets = 0;          // K >= 0
  double scale = 1.0;               // softmax scale, usually 1 / sqrt(d)

  // Budgets per request (each may be null: the defaults above).
  const int64_t* windows = nullptr;      // [batch] W_b >= 1
  const int64_t* rung_limits = nullptr;  // [batch] K_b in 0..K: the first K_b offsets
  const double* mass = nullptr;          // [batch] p in (0, 1]: keep slots until mass p

  // Normaliser (per head arrays of length `heads`).
  bool entmax = false;                   // alpha-entmax instead of softmax
  const double* entmax_alpha = nullptr;  // [heads] in (1, 2], when entmax
  bool log_n_scaling = false;            // multiply the content score by c
  const double* delta = nullptr;         // [heads], when log_n_scaling
  const double* beta = nullptr;          // [heads], when log_n_scaling
  const double* gamma = nullptr;         // [heads], when log_n_scaling
  const double* alibi_slopes = nullptr;  // [heads] >= 0, or null: no distance bias

  int64_t window_of(int64_t b) const { return windows ? windows[b] : window; }
  int64_t rungs_of(int64_t b) const { return rung_limits ? rung_limits[b] : num_offsets; }
  double mass_of(int64_t b) const { return mass ? mass[b] : 1.0; }
};

// Empty when params are valid, else a one-line message naming the problem.
std::string validate_decode_params(const DecodeAttentionParams& params);

}  // namespace reach::kernels
