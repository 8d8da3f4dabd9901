#include "kernels/cpu/entmax_attention.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

namespace reach::kernels {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// (x)^r for x > 0, with the common exponents done exactly and fast.
inline double power(double x, double r) {
  if (r == 1.0) return x;
  if (r == 2.0) return x * x;
  return std::pow(x, r);
}

void check(const EntmaxAttentionParams& p) {
  if (auto message = validate_entmax_params(p); !message.empty()) {
    throw std::invalid_argument("entmax attention: " + message);
  }
}

template <typename T>
void check_finite(const T* x, int64_t size, const char* name) {
  bool finite = true;
#pragma omp parallel for reduction(&& : finite) schedule(static)
  for (int64_t t = 0; t < size; ++t) finite = finite && std::isfinite(x[t]);
  if (!finite) {
    throw std::invalid_argument(std::string("entmax attention: input ") + name +
                                " contains NaN or infinity");
  }
}

// Per-row state shared by forward and backward.
struct Row {
  std::vector<int64_t> key;  // key index per slot, -1 when invisible
  std::vector<double> raw;   // scale * q . k per slot
  std::vector<double> z;     // c * raw - slope * distance: the logit the normaliser sees
  std::vector<double> p;     // probabilities per slot (0 when invisible)
  int64_t visible = 0;
  double log_n = 0.0;       // log(visible + 1)
  double multiplier = 1.0;  // c_i
  explicit Row(int64_t slots)
      : key(static_cast<size_t>(slots)),
        raw(static_cast<size_t>(slots)),
        z(static_cast<size_t>(slots)),
        p(static_cast<size_t>(slots)) {}
};

template <typename T>
double dot(const T* a, const T* b, int64_t d) {
  double acc = 0;
  // simd reduction: lets the compiler vectorise the float64 accumulation (the order of the
  // partial sums changes, which is within the float64 rounding the tests allow).
#pragma omp simd reduction(+ : acc)
  for (int64_t t = 0; t < d; ++t) acc += static_cast<double>(a[t]) * static_cast<double>(b[t]);
  return acc;
}

void softmax_row(double* x, int64_t size) {
  double m = kNegInf;
  for (int64_t j = 0; j < size; ++j) m = std::max(m, x[j]);
  double sum = 0;
  for (int64_t j = 0; j < size; ++j) {
    x[j] = x[j] == kNegInf ? 0.0 : std::exp(x[j] - m);
    sum += x[j];
  }
  for (int64_t j = 0; j < size; ++j) x[j] /= sum;
}

// Index of beta and gamma for row i of head bh.
inline int64_t scale_index(const EntmaxAttentionParams& p, int64_t bh, int64_t i) {
  return p.per_query_scale ? bh * p.base.seq_len + i : bh % p.num_heads;
}

// Scores and probabilities of row i of head bh.
template <typename T>
void compute_row(const EntmaxAttentionParams& p, int64_t bh, int64_t i, const T* q, const T* k,
                 Row& row) {
  const auto& b = p.base;
  const int64_t n = b.seq_len, d = b.head_dim, ws = b.window_slots(), S = b.slots();
  const T* qi = q + (bh * n + i) * d;
  const T* kh = k + bh * n * d;
  const int64_t h = bh % p.num_heads;
  const double slope = p.alibi_slopes ? p.alibi_slopes[h] : 0.0;
  row.visible = 0;
  for (int64_t j = 0; j < S; ++j) {
    const int64_t key = j < ws ? i - j : i - static_cast<int64_t>(b.offsets[j - ws]);
    row.key[static_cast<size_t>(j)] = key >= 0 ? key : -1;
    if (key >= 0) {
      row.raw[static_cast<size_t>(j)] = b.scale * dot(qi, kh + key * d, d);
      ++row.visible;
    }
  }
  row.log_n = std::log(static_cast<double>(row.visible + 1));
  row.multiplier = 1.0;
  if (p.log_n_scaling) {
    const int64_t s = scale_index(p, bh, i);
    row.multiplier = p.delta[h] + p.beta[s] * std::pow(row.log_n, p.gamma[s]);
  }
  for (int64_t j = 0; j < S; ++j) {
    const auto u = static_cast<size_t>(j);
    const auto distance = static_cast<double>(i - row.key[u]);
    row.z[u] = row.key[u] >= 0 ? row.multiplier * row.raw[u] - slope * distance : kNegInf;
    row.p[u] = row.z[u];
  }
  if (p.softmax) {
    softmax_row(row.p.data(), S);
  } else {
    entmax_normalise_row(row.p.data(), S, p.alpha[h]);
  }
}

}  // namespace

void entmax_normalise_row(double* x, int64_t size, double alpha) {
  if (!(alpha > 1.0 && alpha <= 2.0)) {
    throw std::invalid_argument("entmax: alpha must be in (1, 2], got " + std::to_string(alpha));
  }
  const double am1 = alpha - 1.0, r = 1.0 / am1;
  double xmax = kNegInf;
  int64_t visible = 0;
  for (int64_t j = 0; j < size; ++j) {
    if (x[j] == kNegInf) continue;
    if (std::isnan(x[j])) throw std::invalid_argument("entmax: score is NaN");
    x[j] *= am1;
    xmax = std::max(xmax, x[j]);
    ++visible;
  }
  if (visible == 0) throw std::invalid_argument("entmax: empty key set (no visible key)");
  // f(tau) = sum [x - tau]_+^r is decreasing; f(xmax - 1) >= 1 >= f(xmax - visible^-(a-1)).
  // Entries at or below xmax - 1 never enter the support, so only candidates above it are
  // summed (thread-local scratch: no allocation per row once warm).
  double lo = xmax - 1.0, hi = xmax - std::pow(static_cast<double>(visible), -am1);
  thread_local std::vector<double> candidates;
  candidates.clear();
  for (int64_t j = 0; j < size; ++j) {
    if (x[j] > lo) candidates.push_back(x[j]);
  }
  for (int iter = 0; iter < 200; ++iter) {
    const double mid = 0.5 * (lo + hi);
    if (mid <= lo || mid >= hi) break;  // interval at machine precision
    double f = 0;
    for (double c : candidates) {
      if (c > mid) f += power(c - mid, r);
    }
    (f >= 1.0 ? lo : hi) = mid;
  }
  double sum = 0;
  for (int64_t j = 0; j < size; ++j) {
    x[j] = x[j] > lo ? power(x[j] - lo, r) : 0.0;
    sum += x[j];
  }
  for (int64_t j = 0; j < size; ++j) x[j] /= sum;
}

std::string validate_entmax_params(const EntmaxAttentionParams& p, bool values_on_device) {
  if (auto message = validate_params(p.base); !message.empty()) return message;
  for (int64_t k = 0; k < p.base.num_offsets; ++k) {
    if (p.base.offsets[k] != std::floor(p.base.offsets[k])) {
      return "offset " + std::to_string(k) + " (" + std::to_string(p.base.offsets[k]) +
             ") is fractional; entmax attention supports integer offsets only";
    }
  }
  if (p.num_heads < 1 || p.base.batch_heads % p.num_heads != 0) {
    return "num_heads (" + std::to_string(p.num_heads) + ") must be >= 1 and divide batch*heads (" +
           std::to_string(p.base.batch_heads) + ")";
  }
  if (!values_on_device) {
    if (!p.softmax && p.alpha == nullptr) return "alpha pointer is null";
    if (p.log_n_scaling && (!p.delta || !p.beta || !p.gamma)) {
      return "delta, beta or gamma pointer is null";
    }
  }
  for (int64_t h = 0; h < p.num_heads; ++h) {
    const std::string head = " of head " + std::to_string(h);
    if (!p.softmax && p.alpha) {
      const double a = p.alpha[h];
      if (!(a > 1.0 && a <= 2.0)) {
        return "alpha" + head + " must be in (1, 2], got " + std::to_string(a);
      }
    }
    if (p.alibi_slopes && !(p.alibi_slopes[h] >= 0.0 && std::isfinite(p.alibi_slopes[h]))) {
      return "ALiBi slope" + head + " must be finite and >= 0";
    }
    if (p.log_n_scaling && p.delta && !std::isfinite(p.delta[h])) {
      return "delta" + head + " must be finite";
    }
  }
  if (p.log_n_scaling) {
    const int64_t count = p.per_query_scale ? p.base.batch_heads * p.base.seq_len : p.num_heads;
    const std::string unit = p.per_query_scale ? " of row " : " of head ";
    for (int64_t t = 0; t < count; ++t) {
      if (p.beta && !std::isfinite(p.beta[t])) {
        return "beta" + unit + std::to_string(t) + " must be finite";
      }
      if (p.gamma && !std::isfinite(p.gamma[t])) {
        return "gamma" + unit + std::to_string(t) + " must be finite";
      }
    }
  }
  return {};
}

template <typename T>
void entmax_attention_forward_cpu(const EntmaxAttentionParams& p, const T* q, const T* k,
                                  const T* v, T* out) {
  check(p);
  const auto& b = p.base;
  const int64_t n = b.seq_len, d = b.head_dim, S = b.slots(), rows = b.batch_heads * n;
  check_finite(q, rows * d, "q");
  check_finite(k, rows * d, "k");
  check_finite(v, rows * d, "v");
#pragma omp parallel
  {
    Row row(S);
    std::vector<double> acc(static_cast<size_t>(d));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t bh = r / n, i = r % n;
      compute_row(p, bh, i, q, k, row);
      std::fill(acc.begin(), acc.end(), 0.0);
      const T* vh = v + bh * n * d;
      for (int64_t j = 0; j < S; ++j) {
        const double pj = row.p[static_cast<size_t>(j)];
        if (pj == 0.0) continue;  // exact zeros: skipped
        const T* vj = vh + row.key[static_cast<size_t>(j)] * d;
        for (int64_t t = 0; t < d; ++t) acc[static_cast<size_t>(t)] += pj * vj[t];
      }
      for (int64_t t = 0; t < d; ++t) out[r * d + t] = static_cast<T>(acc[static_cast<size_t>(t)]);
    }
  }
}

// Backward. On the support, with s_j = p_j^(2-a) (s = p for softmax) and g_j = dL/dp_j:
//   dL/dz_j = s_j (g_j - sum(s g) / sum(s))        [the (a-1) of x = (a-1) z cancels
//                                                    against the 1/(a-1) of the power]
//   dp_j/da = (1/(a-1)) [s_j (z_j - tau') - p_j log p_j],
//   tau'    = (sum(s z) - sum(p log p)) / sum(s)     [from sum_j dp_j/da = 0]
//   dL/dc_i = sum_j dL/dz_j * raw_j, and c = delta + beta L^gamma with L = log n.
template <typename T>
void entmax_attention_backward_cpu(const EntmaxAttentionParams& p, const T* q, const T* k,
                                   const T* v, const T* grad_out, T* grad_q, T* grad_k, T* grad_v,
                                   double* grad_alpha, double* grad_delta, double* grad_beta,
                                   double* grad_gamma) {
  check(p);
  const auto& b = p.base;
  const int64_t n = b.seq_len, d = b.head_dim, S = b.slots(), BH = b.batch_heads, H = p.num_heads;
  check_finite(q, BH * n * d, "q");
  check_finite(k, BH * n * d, "k");
  check_finite(v, BH * n * d, "v");
  check_finite(grad_out, BH * n * d, "grad_out");
  // Per (batch*head) partial sums of the head parameters' gradients; reduced below.
  std::vector<double> part(static_cast<size_t>(BH * 4), 0.0);
#pragma omp parallel
  {
    Row row(S);
    std::vector<double> dz(static_cast<size_t>(S)), dq(static_cast<size_t>(d));
    std::vector<double> dk(static_cast<size_t>(n * d)), dv(static_cast<size_t>(n * d));
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < BH; ++bh) {
      const int64_t h = bh % H;
      const double a = p.softmax ? 1.0 : p.alpha[h];
      std::fill(dk.begin(), dk.end(), 0.0);
      std::fill(dv.begin(), dv.end(), 0.0);
      const T* vh = v + bh * n * d;
      const T* kh = k + bh * n * d;
      double* acc = part.data() + bh * 4;
      for (int64_t i = 0; i < n; ++i) {
        compute_row(p, bh, i, q, k, row);
        const T* go = grad_out + (bh * n + i) * d;
        const T* qi = q + (bh * n + i) * d;
        double ssum = 0, sg = 0, sz = 0, plogp = 0;
        for (int64_t j = 0; j < S; ++j) {
          const auto u = static_cast<size_t>(j);
          const double pj = row.p[u];
          dz[u] = 0;
          if (pj == 0.0) continue;
          const T* vj = vh + row.key[u] * d;
          const double g = dot(go, vj, d);
          for (int64_t t = 0; t < d; ++t) dv[static_cast<size_t>(row.key[u] * d + t)] += pj * go[t];
          const double s = p.softmax ? pj : (a == 2.0 ? 1.0 : std::pow(pj, 2.0 - a));
          dz[u] = g;  // keep g_j until the sums are known
          ssum += s;
          sg += s * g;
          sz += s * row.z[u];
          plogp += pj * std::log(pj);
        }
        const double mean_g = sg / ssum;
        const double tau_prime = (sz - plogp) / ssum;
        double dalpha = 0, dc = 0;
        std::fill(dq.begin(), dq.end(), 0.0);
        for (int64_t j = 0; j < S; ++j) {
          const auto u = static_cast<size_t>(j);
          const double pj = row.p[u];
          if (pj == 0.0) continue;
          const double s = p.softmax ? pj : (a == 2.0 ? 1.0 : std::pow(pj, 2.0 - a));
          const double g = dz[u];
          if (!p.softmax) {
            dalpha += g * (s * (row.z[u] - tau_prime) - pj * std::log(pj)) / (a - 1.0);
          }
          const double dzj = s * (g - mean_g);
          dc += dzj * row.raw[u];
          const double coef = dzj * row.multiplier * b.scale;
          const T* kj = kh + row.key[u] * d;
          for (int64_t t = 0; t < d; ++t) {
            dq[static_cast<size_t>(t)] += coef * kj[t];
            dk[static_cast<size_t>(row.key[u] * d + t)] += coef * qi[t];
          }
        }
        for (int64_t t = 0; t < d; ++t) {
          grad_q[(bh * n + i) * d + t] = static_cast<T>(dq[static_cast<size_t>(t)]);
        }
        acc[0] += dalpha;
        acc[1] += dc;
        if (p.log_n_scaling) {
          const int64_t s = scale_index(p, bh, i);
          const double lg = std::pow(row.log_n, p.gamma[s]);
          const double d_beta = dc * lg, d_gamma = dc * p.beta[s] * lg * std::log(row.log_n);
          if (p.per_query_scale) {
            if (grad_beta) grad_beta[s] = d_beta;
            if (grad_gamma) grad_gamma[s] = d_gamma;
          } else {
            acc[2] += d_beta;
            acc[3] += d_gamma;
          }
        }
      }
      for (int64_t t = 0; t < n * d; ++t) {
        grad_k[bh * n * d + t] = static_cast<T>(dk[static_cast<size_t>(t)]);
        grad_v[bh * n * d + t] = static_cast<T>(dv[static_cast<size_t>(t)]);
      }
    }
  }
  double* outs[4] = {grad_alpha, grad_delta, grad_beta, grad_gamma};
  const int reduced = p.per_query_scale ? 2 : 4;  // per-query beta/gamma written above
  for (int c = 0; c < reduced; ++c) {
    if (!outs[c]) continue;
    for (int64_t h = 0; h < H; ++h) outs[c][h] = 0;
    for (int64_t bh = 0; bh < BH; ++bh) outs[c][bh % H] += part[static_cast<size_t>(bh * 4 + c)];
  }
}

template void entmax_attention_forward_cpu<float>(const EntmaxAttentionParams&, const float*,
                                                  const float*, const float*, float*);
template void entmax_attention_forward_cpu<double>(const EntmaxAttentionParams&, const double*,
                                                   const double*, const double*, double*);
template void entmax_attention_backward_cpu<float>(const EntmaxAttentionParams&, const float*,
                                                   const float*, const float*, const float*, float*,
                                                   float*, float*, double*, double*, double*,
                                                   double*);
template void entmax_attention_backward_cpu<double>(const EntmaxAttentionParams&, const double*,
                                                    const double*, const double*, const double*,
                                                    double*, double*, double*, double*, double*,
                                                    double*, double*);

}  // namespace reach::kernels
