// Per-query building blocks shared by the CPU chunk-attention kernels (the full forward and
// backward, and single-query decode): landmark top-k, chunk weights and their backward, one
// chunk's softmax scores. Internal to kernels/cpu; float64 arithmetic whatever T.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/chunk_attention_params.hpp"

namespace reach::kernels::chunk_row {

template <typename A, typename B>
double dot(const A* a, const B* b, int64_t d) {
  double s = 0;
  for (int64_t i = 0; i < d; ++i) s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return s;
}

inline double log_sigmoid(double x) {
  return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x));
}
inline double sigmoid(double x) {
  return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x));
}

// Slot order for stick-breaking: the selected slots by chunk index, nearest (highest) first.
inline void nearest_first(const int64_t* chunk, int64_t m, int64_t* order) {
  for (int64_t c = 0; c < m; ++c) order[c] = c;
  std::sort(order, order + m, [chunk](int64_t a, int64_t b) { return chunk[a] > chunk[b]; });
}

// Chunk weights from the selected scores, in slot order.
inline void chunk_weights(ChunkWeighting weighting, const double* score, const int64_t* chunk,
                          int64_t m, double* w, int64_t* order) {
  if (m == 0) return;
  if (weighting == ChunkWeighting::softmax) {
    double top = score[0];
    for (int64_t c = 1; c < m; ++c) top = std::max(top, score[c]);
    double total = 0;
    for (int64_t c = 0; c < m; ++c) total += (w[c] = std::exp(score[c] - top));
    for (int64_t c = 0; c < m; ++c) w[c] /= total;
    return;
  }
  nearest_first(chunk, m, order);
  double log_rest = 0;  // log of the stick left after the nearer chunks
  for (int64_t i = 0; i < m; ++i) {
    const int64_t c = order[i];
    w[c] = std::exp(log_rest + log_sigmoid(score[c]));
    log_rest += log_sigmoid(-score[c]);
  }
}

// The dynamic budget (chunk mass p in (0, 1]): keeps the selected chunks in weight order
// (largest first, ties to the lower slot) until their weights reach p of the m selected
// weights' total, and scales the kept weights so the total is unchanged (softmax: renormalised
// to 1; stick-breaking: the dropped remainder of the stick stays dropped). The kept chunks are
// compacted to the first slots in their slot order (chunk and w); returns how many are kept.
// p = 1 keeps every chunk of nonzero weight and scales by exactly 1.
inline int64_t mass_cut(double p, int64_t m, int64_t* chunk, double* w, int64_t* order) {
  if (m == 0) return 0;
  for (int64_t c = 0; c < m; ++c) order[c] = c;
  std::stable_sort(order, order + m, [w](int64_t a, int64_t b) { return w[a] > w[b]; });
  double total = 0;
  for (int64_t i = 0; i < m; ++i) total += w[order[i]];
  double kept = 0;
  int64_t keep = 0;
  while (keep < m) {
    kept += w[order[keep++]];
    if (kept >= p * total) break;
  }
  // Mark the kept slots (order is free to reuse afterwards), then compact in slot order.
  const double scale = kept > 0 ? total / kept : 1.0;
  for (int64_t i = keep; i < m; ++i) w[order[i]] = -1.0;  // weights are >= 0: a marker
  int64_t out = 0;
  for (int64_t c = 0; c < m; ++c) {
    if (w[c] < 0) continue;
    chunk[out] = chunk[c];
    w[out] = w[c] * scale;
    ++out;
  }
  return out;
}

// dL/ds from dL/dw (grad_w), in slot order.
inline void chunk_weights_backward(ChunkWeighting weighting, const double* score,
                                   const int64_t* chunk, const double* w, const double* grad_w,
                                   int64_t m, double* grad_s, int64_t* order) {
  if (weighting == ChunkWeighting::softmax) {
    double mean = 0;
    for (int64_t c = 0; c < m; ++c) mean += w[c] * grad_w[c];
    for (int64_t c = 0; c < m; ++c) grad_s[c] = w[c] * (grad_w[c] - mean);
    return;
  }
  // log w_c = log sigmoid(s_c) + sum over nearer c' of log sigmoid(-s_c'):
  // dL/ds_c = g_c w_c sigmoid(-s_c) - sigmoid(s_c) * sum over farther c'' of g_c'' w_c''.
  nearest_first(chunk, m, order);
  double farther = 0;
  for (int64_t i = m - 1; i >= 0; --i) {
    const int64_t c = order[i];
    grad_s[c] = grad_w[c] * w[c] * sigmoid(-score[c]) - sigmoid(score[c]) * farther;
    farther += grad_w[c] * w[c];
  }
}

// The m best of candidates 0..candidates-1 (landmark rows of l_bg, dr wide) for retrieval
// query r_t, in slot order: score descending, ties to the lower index. Streams the scores
// through an m-slot insertion list.
template <typename T>
void select_chunks(const T* r_t, const T* l_bg, int64_t dr, double retrieval_scale,
                   int64_t candidates, int64_t m, int64_t* chunk, double* score) {
  int64_t filled = 0;
  for (int64_t i = 0; i < candidates; ++i) {
    const double s = retrieval_scale * dot(r_t, l_bg + i * dr, dr);
    // Candidates arrive in increasing index, so "strictly greater" keeps ties lower-first.
    if (filled == m && !(s > score[m - 1])) continue;
    int64_t pos = filled < m ? filled++ : m - 1;
    while (pos > 0 && s > score[pos - 1]) {
      score[pos] = score[pos - 1];
      chunk[pos] = chunk[pos - 1];
      --pos;
    }
    score[pos] = s;
    chunk[pos] = i;
  }
}

// Scores z_j = scale * q . k_j over the s rows (d wide) of a chunk; returns their log-sum-exp.
template <typename T>
double chunk_scores(double scale, int64_t s, int64_t d, const T* q_t, const T* k_chunk, double* z) {
  double top = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < s; ++j) top = std::max(top, z[j] = scale * dot(q_t, k_chunk + j * d, d));
  double total = 0;
  for (int64_t j = 0; j < s; ++j) total += std::exp(z[j] - top);
  return top + std::log(total);
}

}  // namespace reach::kernels::chunk_row
