#include "kernels/cpu/reference_entmax_attention.hpp"

#include <cmath>

namespace reach::kernels::reference {

std::vector<bool> entmax_mask(const DilatedAttentionParams& p) {
  const int64_t n = p.seq_len;
  std::vector<bool> mask(static_cast<size_t>(n * n), false);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j <= i; ++j) {
      const int64_t distance = i - j;
      bool seen = distance < p.window;
      for (int64_t o = 0; o < p.num_offsets; ++o) {
        seen = seen || static_cast<double>(distance) == p.offsets[o];
      }
      mask[static_cast<size_t>(i * n + j)] = seen;
    }
  }
  return mask;
}

std::vector<double> entmax_probabilities(const EntmaxAttentionParams& p,
                                         const std::vector<double>& q,
                                         const std::vector<double>& k) {
  const auto& b = p.base;
  const int64_t n = b.seq_len, d = b.head_dim;
  const auto mask = entmax_mask(b);
  std::vector<double> probs(static_cast<size_t>(b.batch_heads * n * n), 0.0);
  for (int64_t bh = 0; bh < b.batch_heads; ++bh) {
    const int64_t h = bh % p.num_heads;
    for (int64_t i = 0; i < n; ++i) {
      std::vector<long double> z;
      std::vector<int64_t> keys;
      for (int64_t j = 0; j < n; ++j) {
        if (!mask[static_cast<size_t>(i * n + j)]) continue;
        long double s = 0;
        for (int64_t t = 0; t < d; ++t) {
          s += static_cast<long double>(q[static_cast<size_t>((bh * n + i) * d + t)]) *
               k[static_cast<size_t>((bh * n + j) * d + t)];
        }
        z.push_back(s * b.scale);
        keys.push_back(j);
      }
      long double c = 1;
      if (p.log_n_scaling) {
        const int64_t s = p.per_query_scale ? bh * n + i : h;
        c = p.delta[h] + p.beta[s] * std::pow(std::log(static_cast<long double>(z.size() + 1)),
                                              static_cast<long double>(p.gamma[s]));
      }
      // The multiplier scales the content score; the ALiBi bias comes after it.
      const long double slope = p.alibi_slopes ? p.alibi_slopes[h] : 0.0;
      for (size_t t = 0; t < z.size(); ++t) {
        z[t] = z[t] * c - slope * static_cast<long double>(i - keys[t]);
      }
      std::vector<long double> prob(z.size());
      if (p.softmax) {
        long double m = z[0], sum = 0;
        for (auto e : z) m = std::max(m, e);
        for (size_t j = 0; j < z.size(); ++j) sum += prob[j] = std::exp(z[j] - m);
        for (auto& e : prob) e /= sum;
      } else {
        // p_j = [(a-1) z_j - tau]_+^(1/(a-1)); bisection on tau over a wide bracket.
        const long double a = p.alpha[h], r = 1 / (a - 1);
        long double m = z[0];
        for (auto e : z) m = std::max(m, e);
        long double lo = (a - 1) * m - 1, hi = (a - 1) * m;
        for (int iter = 0; iter < 400; ++iter) {
          const long double tau = (lo + hi) / 2;
          long double sum = 0;
          for (auto e : z) sum += (a - 1) * e > tau ? std::pow((a - 1) * e - tau, r) : 0;
          (sum >= 1 ? lo : hi) = tau;
        }
        for (size_t j = 0; j < z.size(); ++j) {
          prob[j] = (a - 1) * z[j] > lo ? std::pow((a - 1) * z[j] - lo, r) : 0;
        }
      }
      for (size_t j = 0; j < z.size(); ++j) {
        probs[static_cast<size_t>((bh * n + i) * n + keys[j])] = static_cast<double>(prob[j]);
      }
    }
  }
  return probs;
}

std::vector<double> entmax_forward(const EntmaxAttentionParams& p, const std::vector<double>& q,
                                   const std::vector<double>& k, const std::vector<double>& v) {
  const auto& b = p.base;
  const int64_t n = b.seq_len, d = b.head_dim;
  const auto probs = entmax_probabilities(p, q, k);
  std::vector<double> out(static_cast<size_t>(b.batch_heads * n * d), 0.0);
  for (int64_t bh = 0; bh < b.batch_heads; ++bh) {
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        const double pij = probs[static_cast<size_t>((bh * n + i) * n + j)];
        for (int64_t t = 0; t < d; ++t) {
          out[static_cast<size_t>((bh * n + i) * d + t)] +=
              pij * v[static_cast<size_t>((bh * n + j) * d + t)];
        }
      }
    }
  }
  return out;
}

}  // namespace reach::kernels::reference
