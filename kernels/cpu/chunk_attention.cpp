#include "kernels/cpu/chunk_attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/chunk_attention_row.hpp"

namespace reach::kernels {
namespace {

void check(const ChunkAttentionParams& p) {
  const std::string problem = validate_chunk_params(p);
  if (!problem.empty()) throw std::invalid_argument("chunk_attention: " + problem);
}

using chunk_row::chunk_weights;
using chunk_row::chunk_weights_backward;
using chunk_row::dot;

// The k(C) best candidates of the query at t, in slot order.
template <typename T>
int64_t select_chunks(const ChunkAttentionParams& p, const T* r_t, const T* l_bg, int64_t t,
                      int64_t* chunk, double* score) {
  const int64_t candidates = pattern::candidate_chunks(p.selection, t);
  const int64_t m = pattern::selected_chunks(p.selection, candidates);
  chunk_row::select_chunks(r_t, l_bg, p.retrieval_dim, p.retrieval_scale, candidates, m, chunk,
                           score);
  return m;
}

template <typename T>
double chunk_scores(const ChunkAttentionParams& p, const T* q_t, const T* k_chunk, double* z) {
  return chunk_row::chunk_scores(p.scale, p.selection.chunk_size, p.head_dim, q_t, k_chunk, z);
}

}  // namespace

template <typename T>
void chunk_attention_forward_cpu(const ChunkAttentionParams& p, const T* q, const T* k, const T* v,
                                 const T* r, const T* landmarks, T* out, int64_t* indices,
                                 T* weights, T* lse) {
  check(p);
  const bool save = indices != nullptr;
  if (save != (weights != nullptr) || save != (lse != nullptr)) {
    throw std::invalid_argument(
        "chunk_attention: indices, weights and lse must all be given or all be null");
  }
  const int64_t n = p.seq_len, d = p.head_dim, dr = p.retrieval_dim, kslots = p.slots();
  const int64_t s = p.selection.chunk_size, group = p.group_size(), chunks = p.chunks();
  const int64_t rows = p.batch * p.kv_heads * n;
#pragma omp parallel
  {
    std::vector<int64_t> chunk(kslots), order(kslots);
    std::vector<double> score(kslots), w(kslots), z(s), acc(d);
#pragma omp for schedule(dynamic, 16)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t bg = row / n, t = row % n, b = bg / p.kv_heads, g = bg % p.kv_heads;
      const int64_t m = select_chunks(p, r + row * dr, landmarks + bg * chunks * dr, t,
                                      chunk.data(), score.data());
      chunk_weights(p.weighting, score.data(), chunk.data(), m, w.data(), order.data());
      if (save) {
        for (int64_t c = 0; c < kslots; ++c) {
          indices[row * kslots + c] = c < m ? chunk[c] : -1;
          weights[row * kslots + c] = static_cast<T>(c < m ? w[c] : 0.0);
        }
      }
      const T* k_bg = k + bg * n * d;
      const T* v_bg = v + bg * n * d;
      for (int64_t h = g * group; h < (g + 1) * group; ++h) {
        const int64_t qrow = (b * p.query_heads + h) * n + t;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t c = 0; c < m; ++c) {
          const int64_t first = chunk[c] * s;
          const double l = chunk_scores(p, q + qrow * d, k_bg + first * d, z.data());
          if (save) lse[qrow * kslots + c] = static_cast<T>(l);
          for (int64_t j = 0; j < s; ++j) {
            const double pw = w[c] * std::exp(z[j] - l);
            const T* vj = v_bg + (first + j) * d;
            for (int64_t e = 0; e < d; ++e) acc[e] += pw * static_cast<double>(vj[e]);
          }
        }
        if (save) {
          for (int64_t c = m; c < kslots; ++c) lse[qrow * kslots + c] = static_cast<T>(0);
        }
        for (int64_t e = 0; e < d; ++e) out[qrow * d + e] = static_cast<T>(acc[e]);
      }
    }
  }
}

template <typename T>
void chunk_attention_backward_cpu(const ChunkAttentionParams& p, const T* q, const T* k, const T* v,
                                  const T* r, const T* landmarks, const T* grad_out,
                                  const int64_t* indices, const T* weights, const T* lse, T* grad_q,
                                  T* grad_k, T* grad_v, T* grad_r, T* grad_landmarks) {
  check(p);
  const int64_t n = p.seq_len, d = p.head_dim, dr = p.retrieval_dim, kslots = p.slots();
  const int64_t s = p.selection.chunk_size, group = p.group_size(), chunks = p.chunks();
  const int64_t rows = p.batch * p.kv_heads * n;
  const int64_t groups = p.batch * p.kv_heads;
  // Per-slot terms handed from pass 1 to pass 2: dO . o_c per query head, dL/ds_c per group.
  std::vector<double> delta(static_cast<size_t>(p.batch * p.query_heads * n * kslots), 0.0);
  std::vector<double> grad_score(static_cast<size_t>(rows * kslots), 0.0);

  // Pass 1: per (group, query).
#pragma omp parallel
  {
    std::vector<int64_t> chunk(kslots), order(kslots);
    std::vector<double> score(kslots), w(kslots), gw(kslots), gs(kslots), z(s), dq(d);
#pragma omp for schedule(dynamic, 16)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t bg = row / n, t = row % n, b = bg / p.kv_heads, g = bg % p.kv_heads;
      int64_t m = 0;
      while (m < kslots && indices[row * kslots + m] >= 0) {
        chunk[m] = indices[row * kslots + m];
        w[m] = static_cast<double>(weights[row * kslots + m]);
        gw[m] = 0.0;
        ++m;
      }
      const T* k_bg = k + bg * n * d;
      const T* v_bg = v + bg * n * d;
      for (int64_t h = g * group; h < (g + 1) * group; ++h) {
        const int64_t qrow = (b * p.query_heads + h) * n + t;
        const T* go = grad_out + qrow * d;
        std::fill(dq.begin(), dq.end(), 0.0);
        for (int64_t c = 0; c < m; ++c) {
          const int64_t first = chunk[c] * s;
          chunk_scores(p, q + qrow * d, k_bg + first * d, z.data());
          const double l = static_cast<double>(lse[qrow * kslots + c]);
          double dot_o = 0;  // dO . o_c
          for (int64_t j = 0; j < s; ++j) {
            z[j] = std::exp(z[j] - l);  // probabilities from here on
            dot_o += z[j] * dot(go, v_bg + (first + j) * d, d);
          }
          delta[qrow * kslots + c] = dot_o;
          gw[c] += dot_o;
          for (int64_t j = 0; j < s; ++j) {
            const double dz = w[c] * z[j] * (dot(go, v_bg + (first + j) * d, d) - dot_o);
            const T* kj = k_bg + (first + j) * d;
            for (int64_t e = 0; e < d; ++e) dq[e] += dz * static_cast<double>(kj[e]);
          }
        }
        for (int64_t e = 0; e < d; ++e) grad_q[qrow * d + e] = static_cast<T>(p.scale * dq[e]);
      }
      // Scores of the selected chunks (recomputed: the weights' backward needs them).
      const T* r_t = r + row * dr;
      const T* l_bg = landmarks + bg * chunks * dr;
      for (int64_t c = 0; c < m; ++c) {
        score[c] = p.retrieval_scale * dot(r_t, l_bg + chunk[c] * dr, dr);
      }
      chunk_weights_backward(p.weighting, score.data(), chunk.data(), w.data(), gw.data(), m,
                             gs.data(), order.data());
      for (int64_t e = 0; e < dr; ++e) {
        double acc = 0;
        for (int64_t c = 0; c < m; ++c) acc += gs[c] * static_cast<double>(l_bg[chunk[c] * dr + e]);
        grad_r[row * dr + e] = static_cast<T>(p.retrieval_scale * acc);
      }
      for (int64_t c = 0; c < m; ++c) grad_score[row * kslots + c] = gs[c];
    }
  }

  // Pass 2: per (group, chunk), over the (query, slot) pairs that selected it.
  std::vector<int64_t> start(static_cast<size_t>(groups * (chunks + 1)), 0);
  std::vector<int64_t> entries(static_cast<size_t>(rows * kslots));
#pragma omp parallel for schedule(static)
  for (int64_t bg = 0; bg < groups; ++bg) {
    int64_t* st = start.data() + bg * (chunks + 1);
    const int64_t* idx = indices + bg * n * kslots;
    for (int64_t e = 0; e < n * kslots; ++e) {
      if (idx[e] >= 0) ++st[idx[e] + 1];
    }
    for (int64_t i = 0; i < chunks; ++i) st[i + 1] += st[i];
    std::vector<int64_t> fill(st, st + chunks);
    int64_t* out = entries.data() + bg * n * kslots;
    for (int64_t e = 0; e < n * kslots; ++e) {  // increasing query: a fixed summation order
      if (idx[e] >= 0) out[fill[idx[e]]++] = e;
    }
  }
  const int64_t tail_rows = n - chunks * s;
#pragma omp parallel
  {
    std::vector<double> z(s), dk(s * d), dv(s * d), dl(dr);
#pragma omp for schedule(dynamic, 1)
    for (int64_t unit = 0; unit < groups * chunks; ++unit) {
      const int64_t bg = unit / chunks, i = unit % chunks, b = bg / p.kv_heads, g = bg % p.kv_heads;
      const int64_t first = i * s;
      const T* k_c = k + (bg * n + first) * d;
      const T* v_c = v + (bg * n + first) * d;
      std::fill(dk.begin(), dk.end(), 0.0);
      std::fill(dv.begin(), dv.end(), 0.0);
      std::fill(dl.begin(), dl.end(), 0.0);
      const int64_t* st = start.data() + bg * (chunks + 1);
      for (int64_t e = st[i]; e < st[i + 1]; ++e) {
        const int64_t entry = entries[bg * n * kslots + e];
        const int64_t t = entry / kslots, c = entry % kslots, row = bg * n + t;
        const double w = static_cast<double>(weights[row * kslots + c]);
        const double gs = grad_score[row * kslots + c];
        for (int64_t x = 0; x < dr; ++x) dl[x] += gs * static_cast<double>(r[row * dr + x]);
        for (int64_t h = g * group; h < (g + 1) * group; ++h) {
          const int64_t qrow = (b * p.query_heads + h) * n + t;
          const T* q_t = q + qrow * d;
          const T* go = grad_out + qrow * d;
          chunk_scores(p, q_t, k_c, z.data());
          const double l = static_cast<double>(lse[qrow * kslots + c]);
          const double dot_o = delta[qrow * kslots + c];
          for (int64_t j = 0; j < s; ++j) {
            const double prob = std::exp(z[j] - l);
            const double dz = w * prob * (dot(go, v_c + j * d, d) - dot_o) * p.scale;
            for (int64_t x = 0; x < d; ++x) {
              dv[j * d + x] += w * prob * static_cast<double>(go[x]);
              dk[j * d + x] += dz * static_cast<double>(q_t[x]);
            }
          }
        }
      }
      for (int64_t x = 0; x < s * d; ++x) {
        grad_k[(bg * n + first) * d + x] = static_cast<T>(dk[x]);
        grad_v[(bg * n + first) * d + x] = static_cast<T>(dv[x]);
      }
      for (int64_t x = 0; x < dr; ++x) {
        grad_landmarks[(bg * chunks + i) * dr + x] = static_cast<T>(p.retrieval_scale * dl[x]);
      }
    }
  }
  // Rows of a trailing partial chunk are never read.
  if (tail_rows > 0) {
    for (int64_t bg = 0; bg < groups; ++bg) {
      std::fill(grad_k + (bg * n + chunks * s) * d, grad_k + (bg + 1) * n * d, static_cast<T>(0));
      std::fill(grad_v + (bg * n + chunks * s) * d, grad_v + (bg + 1) * n * d, static_cast<T>(0));
    }
  }
}

#define REACH_INSTANTIATE_CHUNK(T)                                                              \
  template void chunk_attention_forward_cpu<T>(const ChunkAttentionParams&, const T*, const T*, \
                                               const T*, const T*, const T*, T*, int64_t*, T*,  \
                                               T*);                                             \
  template void chunk_attention_backward_cpu<T>(                                                \
      const ChunkAttentionParams&, const T*, const T*, const T*, const T*, const T*, const T*,  \
      const int64_t*, const T*, const T*, T*, T*, T*, T*, T*);
REACH_INSTANTIATE_CHUNK(float)
REACH_INSTANTIATE_CHUNK(double)
#undef REACH_INSTANTIATE_CHUNK

}  // namespace reach::kernels
