#include "kernels/cpu/reference_decode_attention.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include "kernels/cpu/entmax_attention.hpp"

namespace reach::kernels::reference {

DecodeResult decode_forward(const DecodeAttentionParams& p, const std::vector<double>& q,
                            const std::vector<double>& k_cache,
                            const std::vector<double>& v_cache) {
  if (auto message = validate_decode_params(p); !message.empty()) {
    throw std::invalid_argument("decode reference: " + message);
  }
  const int64_t d = p.head_dim;
  const int64_t rows = p.batch * p.heads * p.queries;
  DecodeResult result{std::vector<double>(static_cast<size_t>(rows * d)),
                      std::vector<int64_t>(static_cast<size_t>(rows))};
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t i = 0; i < p.queries; ++i) {
      const int64_t t = p.lengths[b] - p.queries + i, window = p.window_of(b);
      const auto row = [&](int64_t h) { return (b * p.heads + h) * p.queries + i; };
      // Interpolation weights over rows 0..t per slot, and the slot's distance.
      std::vector<std::vector<double>> coef;
      std::vector<double> distance;
      for (int64_t w = 0; w < window && w <= t; ++w) {
        coef.emplace_back(static_cast<size_t>(t + 1), 0.0);
        coef.back()[static_cast<size_t>(t - w)] = 1.0;
        distance.push_back(static_cast<double>(w));
      }
      for (int64_t k = 0; k < p.rungs_of(b); ++k) {
        const double x = p.offsets[k];
        if (x < static_cast<double>(window) || static_cast<double>(t) < std::ceil(x)) continue;
        const auto lo = static_cast<int64_t>(std::floor(x));
        const double f = x - std::floor(x);
        coef.emplace_back(static_cast<size_t>(t + 1), 0.0);
        coef.back()[static_cast<size_t>(t - lo)] += 1.0 - f;
        if (f > 0.0) coef.back()[static_cast<size_t>(t - lo - 1)] += f;
        distance.push_back(x);
      }
      const size_t slots = coef.size();
      for (int64_t h = 0; h < p.heads; ++h) {
        const int64_t kv = h / (p.heads / p.kv_heads);
        const double* kh = k_cache.data() + (b * p.kv_heads + kv) * p.capacity * d;
        const double* vh = v_cache.data() + (b * p.kv_heads + kv) * p.capacity * d;
        const double* qi = q.data() + row(h) * d;
        std::vector<std::vector<double>> key(slots, std::vector<double>(static_cast<size_t>(d))),
            value = key;
        for (size_t u = 0; u < slots; ++u) {
          for (int64_t j = 0; j <= t; ++j) {
            for (int64_t e = 0; e < d; ++e) {
              key[u][static_cast<size_t>(e)] += coef[u][static_cast<size_t>(j)] * kh[j * d + e];
              value[u][static_cast<size_t>(e)] += coef[u][static_cast<size_t>(j)] * vh[j * d + e];
            }
          }
        }
        double c = 1.0;
        if (p.log_n_scaling) {
          c = p.delta[h] +
              p.beta[h] * std::pow(std::log(static_cast<double>(slots) + 1.0), p.gamma[h]);
        }
        const double slope = p.alibi_slopes ? p.alibi_slopes[h] : 0.0;
        std::vector<double> prob(slots);
        for (size_t u = 0; u < slots; ++u) {
          double s = 0;
          for (int64_t e = 0; e < d; ++e) s += qi[e] * key[u][static_cast<size_t>(e)];
          prob[u] = c * p.scale * s - slope * distance[u];
        }
        if (p.entmax) {
          entmax_normalise_row(prob.data(), static_cast<int64_t>(slots), p.entmax_alpha[h]);
        } else {
          const double m = *std::max_element(prob.begin(), prob.end());
          double sum = 0;
          for (auto& e : prob) sum += (e = std::exp(e - m));
          for (auto& e : prob) e /= sum;
        }
        if (p.mass_of(b) < 1.0) {
          std::vector<size_t> order(slots);
          std::iota(order.begin(), order.end(), size_t{0});
          std::stable_sort(order.begin(), order.end(),
                           [&](size_t a, size_t z) { return prob[a] > prob[z]; });
          double kept = 0;
          size_t count = 0;
          while (count < slots && kept < p.mass_of(b)) kept += prob[order[count++]];
          for (size_t u = count; u < slots; ++u) prob[order[u]] = 0.0;
          for (auto& e : prob) e /= kept;
        }
        double* o = result.out.data() + row(h) * d;
        int64_t read = 0;
        for (size_t u = 0; u < slots; ++u) {
          if (prob[u] > 0.0) ++read;
          for (int64_t e = 0; e < d; ++e) o[e] += prob[u] * value[u][static_cast<size_t>(e)];
        }
        result.keys_read[static_cast<size_t>(row(h))] = read;
      }
    }
  }
  return result;
}

}  // namespace reach::kernels::reference
