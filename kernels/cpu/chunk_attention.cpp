#include "kernels/cpu/chunk_attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

namespace reach::kernels {
namespace {

void check(const ChunkAttentionParams& p) {
  const std::string problem = validate_chunk_params(p);
  if (!problem.empty()) throw std::invalid_argument("chunk_attention: " + problem);
}

template <typename A, typename B>
double dot(const A* a, const B* b, int64_t d) {
  double s = 0;
  for (int64_t i = 0; i < d; ++i) s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return s;
}

double log_sigmoid(double x) {
  return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x));
}
double sigmoid(double x) {
  return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x));
}

// Slot order for stick-breaking: the selected slots by chunk index, nearest (highest) first.
void nearest_first(const int64_t* chunk, int64_t m, int64_t* order) {
  for (int64_t c = 0; c < m; ++c) order[c] = c;
  std::sort(order, order + m, [chunk](int64_t a, int64_t b) { return chunk[a] > chunk[b]; });
}

// Chunk weights from the selected scores, in slot order.
void chunk_weights(ChunkWeighting weighting, const double* score, const int64_t* chunk, int64_t m,
                   double* w, int64_t* order) {
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

// dL/ds from dL/dw (grad_w), in slot order.
void chunk_weights_backward(ChunkWeighting weighting, const double* score, const int64_t* chunk,
                            const double* w, const double* grad_w, int64_t m, double* grad_s,
                            int64_t* order) {
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

// The k(C) best candidates of one query, in slot order (score descending, ties: lower index).
template <typename T>
int64_t select_chunks(const ChunkAttentionParams& p, const T* r_t, const T* l_bg, int64_t t,
                      int64_t* chunk, double* score) {
  const int64_t candidates = pattern::candidate_chunks(p.selection, t);
  const int64_t m = pattern::selected_chunks(p.selection, candidates);
  int64_t filled = 0;
  for (int64_t i = 0; i < candidates; ++i) {
    const double s = p.retrieval_scale * dot(r_t, l_bg + i * p.retrieval_dim, p.retrieval_dim);
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
  return m;
}

// Scores z_j = scale * q . k_j over the S rows of a chunk; returns their log-sum-exp.
template <typename T>
double chunk_scores(const ChunkAttentionParams& p, const T* q_t, const T* k_chunk, double* z) {
  const int64_t s = p.selection.chunk_size, d = p.head_dim;
  double top = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < s; ++j)
    top = std::max(top, z[j] = p.scale * dot(q_t, k_chunk + j * d, d));
  double total = 0;
  for (int64_t j = 0; j < s; ++j) total += std::exp(z[j] - top);
  return top + std::log(total);
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
