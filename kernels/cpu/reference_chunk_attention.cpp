#include "kernels/cpu/reference_chunk_attention.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

namespace reach::kernels::reference {
namespace {

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

double dot(const double* a, const double* b, int64_t d) {
  double s = 0;
  for (int64_t i = 0; i < d; ++i) s += a[i] * b[i];
  return s;
}

// The selection of one (batch, group, query): chunk indices and scores in slot order.
struct Selection {
  std::vector<int64_t> chunks;
  std::vector<double> scores;
};

Selection select(const ChunkAttentionParams& p, const double* r_t, const double* l_bg, int64_t t) {
  const auto& sel = p.selection;
  const int64_t s = sel.chunk_size, w = sel.window;
  std::vector<std::pair<double, int64_t>> candidates;
  for (int64_t i = 0; i < p.chunks(); ++i) {
    const bool fully_past = t >= (i + 1) * s;
    const bool inside_window = w > 0 && i * s >= t - w + 1;
    if (fully_past && !inside_window) {
      candidates.push_back(
          {p.retrieval_scale * dot(r_t, l_bg + i * p.retrieval_dim, p.retrieval_dim), i});
    }
  }
  std::sort(candidates.begin(), candidates.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  const auto count =
      static_cast<size_t>(pattern::selected_chunks(sel, static_cast<int64_t>(candidates.size())));
  Selection out;
  for (size_t c = 0; c < count; ++c) {
    out.scores.push_back(candidates[c].first);
    out.chunks.push_back(candidates[c].second);
  }
  return out;
}

// Weights and the Jacobian dw_c / ds_j, [m, m] row-major.
void weights_and_jacobian(const ChunkAttentionParams& p, const Selection& s, std::vector<double>& w,
                          std::vector<double>& jac) {
  const size_t m = s.chunks.size();
  w.assign(m, 0.0);
  jac.assign(m * m, 0.0);
  if (m == 0) return;
  if (p.weighting == ChunkWeighting::softmax) {
    const double top = *std::max_element(s.scores.begin(), s.scores.end());
    double total = 0;
    for (size_t c = 0; c < m; ++c) total += (w[c] = std::exp(s.scores[c] - top));
    for (auto& x : w) x /= total;
    for (size_t c = 0; c < m; ++c) {
      for (size_t j = 0; j < m; ++j) jac[c * m + j] = w[c] * ((c == j) - w[j]);
    }
    return;
  }
  // Stick-breaking, nearest (highest index) chunk first: w_c = beta_c * prod_{nearer} (1 - beta).
  for (size_t c = 0; c < m; ++c) {
    w[c] = sigmoid(s.scores[c]);
    for (size_t j = 0; j < m; ++j) {
      if (s.chunks[j] > s.chunks[c]) w[c] *= 1.0 - sigmoid(s.scores[j]);
    }
  }
  for (size_t c = 0; c < m; ++c) {
    for (size_t j = 0; j < m; ++j) {
      if (j == c) jac[c * m + j] = w[c] * (1.0 - sigmoid(s.scores[c]));
      if (s.chunks[j] > s.chunks[c]) jac[c * m + j] = -w[c] * sigmoid(s.scores[j]);
    }
  }
}

// Softmax probabilities of query row q over the S keys of chunk `chunk`.
std::vector<double> chunk_probabilities(const ChunkAttentionParams& p, const double* q_t,
                                        const double* k_bg, int64_t chunk) {
  const int64_t s = p.selection.chunk_size, d = p.head_dim;
  std::vector<double> z(static_cast<size_t>(s));
  for (int64_t j = 0; j < s; ++j) z[j] = p.scale * dot(q_t, k_bg + (chunk * s + j) * d, d);
  const double top = *std::max_element(z.begin(), z.end());
  double total = 0;
  for (auto& x : z) total += (x = std::exp(x - top));
  for (auto& x : z) x /= total;
  return z;
}

struct Offsets {
  int64_t q, kv, r, l, slots;
};

Offsets offsets(const ChunkAttentionParams& p, int64_t b, int64_t h, int64_t g, int64_t t) {
  const int64_t n = p.seq_len;
  return {((b * p.query_heads + h) * n + t) * p.head_dim, (b * p.kv_heads + g) * n * p.head_dim,
          ((b * p.kv_heads + g) * n + t) * p.retrieval_dim,
          (b * p.kv_heads + g) * p.chunks() * p.retrieval_dim,
          ((b * p.kv_heads + g) * n + t) * p.slots()};
}

}  // namespace

ChunkForward chunk_forward(const ChunkAttentionParams& p, const std::vector<double>& q,
                           const std::vector<double>& k, const std::vector<double>& v,
                           const std::vector<double>& r, const std::vector<double>& landmarks) {
  const int64_t n = p.seq_len, d = p.head_dim, kslots = p.slots();
  const int64_t s = p.selection.chunk_size;
  ChunkForward f;
  f.out.assign(q.size(), 0.0);
  f.indices.assign(static_cast<size_t>(p.batch * p.kv_heads * n * kslots), -1);
  f.weights.assign(f.indices.size(), 0.0);
  std::vector<double> w, jac;
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t h = 0; h < p.query_heads; ++h) {
      const int64_t g = h / p.group_size();
      for (int64_t t = 0; t < n; ++t) {
        const Offsets o = offsets(p, b, h, g, t);
        const Selection sel = select(p, &r[o.r], &landmarks[o.l], t);
        weights_and_jacobian(p, sel, w, jac);
        for (size_t c = 0; c < sel.chunks.size(); ++c) {
          f.indices[o.slots + c] = sel.chunks[c];
          f.weights[o.slots + c] = w[c];
          const auto prob = chunk_probabilities(p, &q[o.q], &k[o.kv], sel.chunks[c]);
          for (int64_t j = 0; j < s; ++j) {
            const double* vj = &v[o.kv + (sel.chunks[c] * s + j) * d];
            for (int64_t e = 0; e < d; ++e) f.out[o.q + e] += w[c] * prob[j] * vj[e];
          }
        }
      }
    }
  }
  return f;
}

ChunkGradients chunk_backward(const ChunkAttentionParams& p, const std::vector<double>& q,
                              const std::vector<double>& k, const std::vector<double>& v,
                              const std::vector<double>& r, const std::vector<double>& landmarks,
                              const std::vector<double>& grad_out) {
  const int64_t n = p.seq_len, d = p.head_dim, dr = p.retrieval_dim;
  const int64_t s = p.selection.chunk_size;
  ChunkGradients gr{std::vector<double>(q.size()), std::vector<double>(k.size()),
                    std::vector<double>(v.size()), std::vector<double>(r.size()),
                    std::vector<double>(landmarks.size())};
  std::vector<double> w, jac;
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t h = 0; h < p.query_heads; ++h) {
      const int64_t g = h / p.group_size();
      for (int64_t t = 0; t < n; ++t) {
        const Offsets o = offsets(p, b, h, g, t);
        const Selection sel = select(p, &r[o.r], &landmarks[o.l], t);
        const size_t m = sel.chunks.size();
        weights_and_jacobian(p, sel, w, jac);
        const double* go = &grad_out[o.q];
        std::vector<double> grad_w(m, 0.0);
        for (size_t c = 0; c < m; ++c) {
          const int64_t first = sel.chunks[c] * s;
          const auto prob = chunk_probabilities(p, &q[o.q], &k[o.kv], sel.chunks[c]);
          // o_c = sum_j prob_j v_j; out += w_c o_c.
          std::vector<double> grad_prob(static_cast<size_t>(s));
          for (int64_t j = 0; j < s; ++j) {
            const int64_t row = o.kv + (first + j) * d;
            grad_prob[j] = w[c] * dot(go, &v[row], d);
            grad_w[c] += prob[j] * dot(go, &v[row], d);
            for (int64_t e = 0; e < d; ++e) gr.v[row + e] += w[c] * prob[j] * go[e];
          }
          // Softmax Jacobian, then z_j = scale * q . k_j.
          double mean = 0;
          for (int64_t j = 0; j < s; ++j) mean += prob[j] * grad_prob[j];
          for (int64_t j = 0; j < s; ++j) {
            const double grad_z = prob[j] * (grad_prob[j] - mean);
            const int64_t row = o.kv + (first + j) * d;
            for (int64_t e = 0; e < d; ++e) {
              gr.q[o.q + e] += grad_z * p.scale * k[row + e];
              gr.k[row + e] += grad_z * p.scale * q[o.q + e];
            }
          }
        }
        // Scores s_c = retrieval_scale * r_t . L_c, through the weights' Jacobian.
        for (size_t j = 0; j < m; ++j) {
          double grad_s = 0;
          for (size_t c = 0; c < m; ++c) grad_s += grad_w[c] * jac[c * m + j];
          const int64_t lrow = o.l + sel.chunks[j] * dr;
          for (int64_t e = 0; e < dr; ++e) {
            gr.r[o.r + e] += grad_s * p.retrieval_scale * landmarks[lrow + e];
            gr.landmarks[lrow + e] += grad_s * p.retrieval_scale * r[o.r + e];
          }
        }
      }
    }
  }
  return gr;
}

}  // namespace reach::kernels::reference
