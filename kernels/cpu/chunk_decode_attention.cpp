#include "kernels/cpu/chunk_decode_attention.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/chunk_attention_row.hpp"

namespace reach::kernels {

pattern::ChunkSelection ChunkDecodeParams::selection_of(int64_t b) const {
  pattern::ChunkSelection s = selection;
  if (top_ks != nullptr) {
    s.top_k = top_ks[b];
    if (s.min_k > s.top_k) s.min_k = s.top_k;
  }
  return s;
}

std::string validate_chunk_decode_params(const ChunkDecodeParams& p) {
  if (auto problem = validate_chunk_heads({{"batch", p.batch},
                                           {"query heads", p.query_heads},
                                           {"kv heads", p.kv_heads},
                                           {"head_dim", p.head_dim},
                                           {"retrieval_dim", p.retrieval_dim},
                                           {"capacity", p.capacity}},
                                          p.query_heads, p.kv_heads, p.selection);
      !problem.empty()) {
    return problem;
  }
  if (p.landmark_capacity < p.capacity / p.selection.chunk_size) {
    return "landmark capacity (" + std::to_string(p.landmark_capacity) +
           ") must be >= capacity / chunk size (" +
           std::to_string(p.capacity / p.selection.chunk_size) + ")";
  }
  if (p.lengths == nullptr) return "lengths pointer is null";
  if (p.queries < 1) return "queries must be >= 1, got " + std::to_string(p.queries);
  for (int64_t b = 0; b < p.batch; ++b) {
    if (p.lengths[b] < p.queries || p.lengths[b] > p.capacity) {
      return "request " + std::to_string(b) + ": length " + std::to_string(p.lengths[b]) +
             " is outside " + std::to_string(p.queries) + "..capacity (" +
             std::to_string(p.capacity) + ")" +
             (p.queries > 1
                  ? " (a request holds at least its " + std::to_string(p.queries) + " queries)"
                  : "");
    }
    if (p.masses != nullptr && !(p.masses[b] > 0.0 && p.masses[b] <= 1.0)) {
      return "request " + std::to_string(b) + ": chunk mass " + std::to_string(p.masses[b]) +
             " is outside (0, 1]";
    }
    if (p.top_ks != nullptr && (p.top_ks[b] < 1 || p.top_ks[b] > p.selection.top_k)) {
      return "request " + std::to_string(b) + ": top-k " + std::to_string(p.top_ks[b]) +
             " is outside 1..top_k slots (" + std::to_string(p.selection.top_k) + ")";
    }
  }
  for (double s : {p.scale, p.retrieval_scale}) {
    if (!std::isfinite(s) || s <= 0.0) {
      return "scales must be positive finite numbers, got " + std::to_string(s);
    }
  }
  return {};
}

template <typename T>
void chunk_decode_attention_cpu(const ChunkDecodeParams& p, const T* q, const T* r,
                                const T* k_cache, const T* v_cache, const T* landmarks, T* out,
                                int64_t* chunks_read) {
  const std::string problem = validate_chunk_decode_params(p);
  if (!problem.empty()) throw std::invalid_argument("chunk_decode_attention: " + problem);
  const int64_t d = p.head_dim, dr = p.retrieval_dim, s = p.selection.chunk_size;
  const int64_t group = p.query_heads / p.kv_heads, slots = p.selection.top_k;
  const int64_t nq = p.queries, rows = p.batch * p.kv_heads * nq;
#pragma omp parallel
  {
    std::vector<int64_t> chunk(slots), order(slots);
    std::vector<double> score(slots), w(slots), z(s), acc(d);
#pragma omp for schedule(dynamic, 1)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t bg = row / nq, i = row % nq;
      const int64_t b = bg / p.kv_heads, g = bg % p.kv_heads, t = p.lengths[b] - nq + i;
      const pattern::ChunkSelection sel = p.selection_of(b);
      const int64_t candidates = pattern::candidate_chunks(sel, t);
      int64_t m = pattern::selected_chunks(sel, candidates);
      chunk_row::select_chunks(r + row * dr, landmarks + bg * p.landmark_capacity * dr, dr,
                               p.retrieval_scale, candidates, m, chunk.data(), score.data());
      chunk_row::chunk_weights(p.weighting, score.data(), chunk.data(), m, w.data(), order.data());
      if (p.masses != nullptr && p.masses[b] < 1.0) {
        m = chunk_row::mass_cut(p.masses[b], m, chunk.data(), w.data(), order.data());
      }
      if (chunks_read != nullptr) chunks_read[row] = m;
      const T* k_bg = k_cache + bg * p.capacity * d;
      const T* v_bg = v_cache + bg * p.capacity * d;
      for (int64_t h = g * group; h < (g + 1) * group; ++h) {
        const T* q_t = q + ((b * p.query_heads + h) * nq + i) * d;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t c = 0; c < m; ++c) {
          const int64_t first = chunk[c] * s;
          const double l = chunk_row::chunk_scores(p.scale, s, d, q_t, k_bg + first * d, z.data());
          for (int64_t j = 0; j < s; ++j) {
            const double pw = w[c] * std::exp(z[j] - l);
            const T* vj = v_bg + (first + j) * d;
            for (int64_t e = 0; e < d; ++e) acc[e] += pw * static_cast<double>(vj[e]);
          }
        }
        T* o = out + ((b * p.query_heads + h) * nq + i) * d;
        for (int64_t e = 0; e < d; ++e) o[e] = static_cast<T>(acc[e]);
      }
    }
  }
}

template void chunk_decode_attention_cpu<float>(const ChunkDecodeParams&, const float*,
                                                const float*, const float*, const float*,
                                                const float*, float*, int64_t*);
template void chunk_decode_attention_cpu<double>(const ChunkDecodeParams&, const double*,
                                                 const double*, const double*, const double*,
                                                 const double*, double*, int64_t*);

}  // namespace reach::kernels
