#include "kernels/cpu/entmax_attention.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace reach::kernels {

// Why bisection: exact sort-based thresholds exist only for alpha = 1.5 and 2; bisection on
// tau works for any alpha in (1, 2] (a learned alpha too), its bracket [max - 1,
// max - (1/n)^(alpha-1)] is known, and 80 halvings take it below double precision. Rows here
// have W + K ~ 100 entries, so 80 passes cost little next to the dot products.
void entmax_bisect(const double* z, int64_t n, double alpha, double* p) {
  const double am1 = alpha - 1.0, inv = 1.0 / am1;
  // u^(1/(alpha-1)) without pow() for the common alphas (1.5: u^2, 2: u).
  auto power = [alpha, inv](double u) {
    if (alpha == 1.5) return u * u;
    if (alpha == 2.0) return u;
    return std::pow(u, inv);
  };
  double max_x = -INFINITY;
  for (int64_t i = 0; i < n; ++i) max_x = std::max(max_x, am1 * z[i]);
  double lo = max_x - 1.0, hi = max_x - std::pow(1.0 / static_cast<double>(n), am1);
  auto mass = [&](double tau) {
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double u = am1 * z[i] - tau;
      if (u > 0) sum += power(u);
    }
    return sum;
  };
  for (int iter = 0; iter < 80; ++iter) {
    const double mid = 0.5 * (lo + hi);
    if (mid <= lo || mid >= hi) break;
    (mass(mid) >= 1.0 ? lo : hi) = mid;
  }
  const double tau = lo;  // mass(lo) >= 1: the support is never empty
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double u = am1 * z[i] - tau;
    p[i] = u > 0 ? power(u) : 0.0;
    sum += p[i];
  }
  for (int64_t i = 0; i < n; ++i) p[i] /= sum;
}

std::string validate_entmax_params(const EntmaxParams& e) {
  if (auto m = validate_params(e.attention); !m.empty()) return m;
  if (!(e.alpha > 1.0 && e.alpha <= 2.0)) {
    return "entmax alpha must be in (1, 2], got " + std::to_string(e.alpha) +
           " (alpha -> 1 is softmax: use dilated attention)";
  }
  if (e.heads < 1 || e.attention.batch_heads % e.heads != 0) {
    return "heads must divide batch * heads";
  }
  for (int64_t k = 0; k < e.attention.num_offsets; ++k) {
    if (e.attention.offsets[k] != std::floor(e.attention.offsets[k])) {
      return "entmax attention supports integer offsets only (offset " + std::to_string(k) + " = " +
             std::to_string(e.attention.offsets[k]) + ")";
    }
  }
  const int scaled = (e.delta != nullptr) + (e.beta != nullptr) + (e.gamma != nullptr);
  if (scaled != 0 && scaled != 3) return "ASEntmax scaling needs delta, beta and gamma together";
  return {};
}

namespace {

template <typename T>
double dot(const T* a, const T* b, int64_t d) {
  double acc = 0;
  for (int64_t t = 0; t < d; ++t) acc += static_cast<double>(a[t]) * static_cast<double>(b[t]);
  return acc;
}

// Visible key rows of query i, in slot order: window slots then offsets. Returns the count
// and fills rows[] (key row) and slots[] (slot index in the n x S buffers).
int64_t visible_keys(const EntmaxParams& e, int64_t i, int64_t* rows, int64_t* slots) {
  const auto& p = e.attention;
  const int64_t ws = p.window_slots();
  int64_t m = 0;
  for (int64_t w = 0; w < std::min<int64_t>(ws, i + 1); ++w) {
    rows[m] = i - w;
    slots[m++] = w;
  }
  for (int64_t k = 0; k < p.num_offsets; ++k) {
    const auto d = static_cast<int64_t>(p.offsets[k]);
    if (i - d >= 0) {
      rows[m] = i - d;
      slots[m++] = ws + k;
    }
  }
  return m;
}

// s(n) = delta + beta * (log n)^gamma for head h (1 when unscaled); also (log n)^gamma.
double length_scale(const EntmaxParams& e, int64_t h, int64_t n, double* log_pow) {
  *log_pow = 0;
  if (!e.delta) return 1.0;
  const double l = std::log(static_cast<double>(n));
  *log_pow = l > 0 ? std::pow(l, e.gamma[h]) : 0.0;
  return e.delta[h] + e.beta[h] * *log_pow;
}

void check(const EntmaxParams& e) {
  if (auto m = validate_entmax_params(e); !m.empty()) {
    throw std::invalid_argument("entmax attention: " + m);
  }
}

// Scores z (scaled), raw scores, probabilities for row i; throws on non-finite scores.
template <typename T>
int64_t row_probabilities(const EntmaxParams& e, const T* qi, const T* kh, int64_t h, int64_t i,
                          int64_t* rows, int64_t* slots, double* raw, double* z, double* p,
                          double* scale_out, double* log_pow) {
  const int64_t d = e.attention.head_dim;
  const int64_t m = visible_keys(e, i, rows, slots);
  const double sc = length_scale(e, h, m, log_pow);
  for (int64_t j = 0; j < m; ++j) {
    raw[j] = e.attention.scale * dot(qi, kh + rows[j] * d, d);
    z[j] = sc * raw[j];
    if (!std::isfinite(z[j])) {
      throw std::invalid_argument("entmax attention: non-finite score at query " +
                                  std::to_string(i) + " (NaN or infinite input?)");
    }
  }
  entmax_bisect(z, m, e.alpha, p);
  *scale_out = sc;
  return m;
}

}  // namespace

template <typename T>
void entmax_attention_forward_cpu(const EntmaxParams& e, const T* q, const T* k, const T* v,
                                  T* out) {
  check(e);
  const auto& p = e.attention;
  const int64_t n = p.seq_len, d = p.head_dim, S = p.slots();
  const int64_t rows_total = p.batch_heads * n;
  bool failed = false;
  std::string failure;
#pragma omp parallel
  {
    std::vector<int64_t> rows(S), slots(S);
    std::vector<double> raw(S), z(S), prob(S), acc(d);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows_total; ++r) {
      const int64_t bh = r / n, i = r % n;
      double sc = 1, log_pow = 0;
      int64_t m = 0;
      try {
        m = row_probabilities(e, q + r * d, k + bh * n * d, bh % e.heads, i, rows.data(),
                              slots.data(), raw.data(), z.data(), prob.data(), &sc, &log_pow);
      } catch (const std::invalid_argument& ex) {
#pragma omp critical
        {
          failed = true;
          failure = ex.what();
        }
        continue;
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j = 0; j < m; ++j) {
        if (prob[j] == 0) continue;  // exact zeros: skip the value row entirely
        const T* vj = v + (bh * n + rows[j]) * d;
        for (int64_t t = 0; t < d; ++t) acc[t] += prob[j] * static_cast<double>(vj[t]);
      }
      for (int64_t t = 0; t < d; ++t) out[r * d + t] = static_cast<T>(acc[t]);
    }
  }
  if (failed) throw std::invalid_argument(failure);
}

template <typename T>
void entmax_attention_backward_cpu(const EntmaxParams& e, const T* q, const T* k, const T* v,
                                   const T* grad_out, T* grad_q, T* grad_k, T* grad_v,
                                   double* grad_delta, double* grad_beta, double* grad_gamma) {
  check(e);
  const auto& p = e.attention;
  const int64_t n = p.seq_len, d = p.head_dim, S = p.slots(), ws = p.window_slots();
  const int64_t K = p.num_offsets;
  for (double* g : {grad_delta, grad_beta, grad_gamma}) {
    if (g) std::fill(g, g + e.heads, 0.0);
  }
  std::vector<double> prob_buf(static_cast<size_t>(n * S)), ds_buf(static_cast<size_t>(n * S));
  for (int64_t bh = 0; bh < p.batch_heads; ++bh) {
    const int64_t h = bh % e.heads;
    const T* qh = q + bh * n * d;
    const T* kh = k + bh * n * d;
    const T* vh = v + bh * n * d;
    const T* doh = grad_out + bh * n * d;
    double g_scale = 0, g_scale_logpow = 0, g_scale_gamma = 0;
    // Pass 1, query-centric: probabilities, score gradients, dq, scaling gradients.
#pragma omp parallel reduction(+ : g_scale, g_scale_logpow, g_scale_gamma)
    {
      std::vector<int64_t> rows(S), slots(S);
      std::vector<double> raw(S), z(S), prob(S), g(S), dq(d);
#pragma omp for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        double sc = 1, log_pow = 0;
        const int64_t m = row_probabilities(e, qh + i * d, kh, h, i, rows.data(), slots.data(),
                                            raw.data(), z.data(), prob.data(), &sc, &log_pow);
        double sum_s = 0, sum_sg = 0;
        for (int64_t j = 0; j < m; ++j) {
          g[j] = dot(doh + i * d, vh + rows[j] * d, d);
          const double s = prob[j] > 0 ? std::pow(prob[j], 2.0 - e.alpha) : 0.0;
          sum_s += s;
          sum_sg += s * g[j];
        }
        double* pi = prob_buf.data() + i * S;
        double* dsi = ds_buf.data() + i * S;
        std::fill(pi, pi + S, 0.0);
        std::fill(dsi, dsi + S, 0.0);
        std::fill(dq.begin(), dq.end(), 0.0);
        double dscale = 0;
        for (int64_t j = 0; j < m; ++j) {
          const double s = prob[j] > 0 ? std::pow(prob[j], 2.0 - e.alpha) : 0.0;
          const double dz = s * (g[j] - sum_sg / sum_s);
          dscale += dz * raw[j];
          const double ds = dz * sc * p.scale;  // d loss / d (q . k_j)
          pi[slots[j]] = prob[j];
          dsi[slots[j]] = ds;
          const T* kj = kh + rows[j] * d;
          for (int64_t t = 0; t < d; ++t) dq[t] += ds * static_cast<double>(kj[t]);
        }
        for (int64_t t = 0; t < d; ++t) grad_q[(bh * n + i) * d + t] = static_cast<T>(dq[t]);
        if (e.delta) {
          const double l = std::log(static_cast<double>(m));
          g_scale += dscale;
          g_scale_logpow += dscale * log_pow;
          if (l > 0) g_scale_gamma += dscale * e.beta[h] * log_pow * std::log(l);
        }
      }
    }
    if (grad_delta) grad_delta[h] += g_scale;
    if (grad_beta) grad_beta[h] += g_scale_logpow;
    if (grad_gamma) grad_gamma[h] += g_scale_gamma;

      // Pass 2, key-centric: key j gathers the (query, slot) pairs that saw it.
#pragma omp parallel
    {
      std::vector<double> dk(d), dv(d);
#pragma omp for schedule(static)
      for (int64_t j = 0; j < n; ++j) {
        std::fill(dk.begin(), dk.end(), 0.0);
        std::fill(dv.begin(), dv.end(), 0.0);
        auto gather = [&](int64_t i, int64_t slot) {
          const double ds = ds_buf[i * S + slot], pr = prob_buf[i * S + slot];
          if (ds == 0 && pr == 0) return;
          for (int64_t t = 0; t < d; ++t) {
            dk[t] += ds * static_cast<double>(qh[i * d + t]);
            dv[t] += pr * static_cast<double>(doh[i * d + t]);
          }
        };
        for (int64_t w = 0; w < std::min<int64_t>(ws, n - j); ++w) gather(j + w, w);
        for (int64_t kk = 0; kk < K; ++kk) {
          const int64_t i = j + static_cast<int64_t>(p.offsets[kk]);
          if (i < n) gather(i, ws + kk);
        }
        for (int64_t t = 0; t < d; ++t) {
          grad_k[(bh * n + j) * d + t] = static_cast<T>(dk[t]);
          grad_v[(bh * n + j) * d + t] = static_cast<T>(dv[t]);
        }
      }
    }
  }
}

template void entmax_attention_forward_cpu<float>(const EntmaxParams&, const float*, const float*,
                                                  const float*, float*);
template void entmax_attention_forward_cpu<double>(const EntmaxParams&, const double*,
                                                   const double*, const double*, double*);
template void entmax_attention_backward_cpu<float>(const EntmaxParams&, const float*, const float*,
                                                   const float*, const float*, float*, float*,
                                                   float*, double*, double*, double*);
template void entmax_attention_backward_cpu<double>(const EntmaxParams&, const double*,
                                                    const double*, const double*, const double*,
                                                    double*, double*, double*, double*, double*,
                                                    double*);

}  // namespace reach::kernels
