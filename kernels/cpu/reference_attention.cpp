#include "kernels/cpu/reference_attention.hpp"

#include <cmath>
#include <stdexcept>

namespace reach::kernels::reference {
namespace {

// Dense weight matrix A[i][j]: how much key row j contributes to the effective key
// of each visible slot of query i, listed per slot (weight pairs). Built from the
// definition, independently of the fast kernel's slot arithmetic.
struct Slot {
  std::vector<std::pair<int64_t, double>> rows;  // (key row, weight)
  int64_t offset_index = -1;                     // -1 for window slots
  int64_t hi_row = -1;                           // floor(x)+1 row for d/dx, or -1
  int64_t lo_row = -1;
};

std::vector<std::vector<Slot>> build_slots(const DilatedAttentionParams& p) {
  if (auto m = validate_params(p); !m.empty()) throw std::invalid_argument(m);
  std::vector<std::vector<Slot>> all(static_cast<size_t>(p.seq_len));
  for (int64_t i = 0; i < p.seq_len; ++i) {
    // Explicit mask over keys j <= i: the window.
    for (int64_t j = 0; j <= i; ++j) {
      if (i - j < p.window) all[i].push_back(Slot{{{j, 1.0}}, -1, -1, -1});
    }
    for (int64_t kk = 0; kk < p.num_offsets; ++kk) {
      const double x = p.offsets[kk];
      if (static_cast<double>(i) < std::ceil(x)) continue;  // not visible yet
      const auto lo = static_cast<int64_t>(std::floor(x));
      const double f = x - static_cast<double>(lo);
      Slot s;
      s.offset_index = kk;
      s.rows.push_back({i - lo, 1.0 - f});
      if (f > 0) s.rows.push_back({i - lo - 1, f});
      s.lo_row = i - lo;
      s.hi_row = i - lo - 1 >= 0 ? i - lo - 1 : -1;
      all[i].push_back(s);
    }
  }
  return all;
}

double row_dot(const std::vector<double>& a, int64_t ra, const std::vector<double>& b, int64_t rb,
               int64_t d) {
  double acc = 0;
  for (int64_t t = 0; t < d; ++t) acc += a[ra * d + t] * b[rb * d + t];
  return acc;
}

}  // namespace

std::vector<double> forward(const DilatedAttentionParams& p, const std::vector<double>& q,
                            const std::vector<double>& k, const std::vector<double>& v) {
  const auto slots = build_slots(p);
  const int64_t n = p.seq_len, d = p.head_dim;
  std::vector<double> out(static_cast<size_t>(p.batch_heads * n * d), 0.0);
  for (int64_t bh = 0; bh < p.batch_heads; ++bh) {
    const int64_t kvh = bh / p.kv_group;  // the K/V head this query head reads (GQA)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t qi = bh * n + i;
      std::vector<double> s;
      for (const auto& slot : slots[i]) {
        double score = 0;
        for (auto [row, w] : slot.rows) score += w * row_dot(q, qi, k, kvh * n + row, d);
        s.push_back(p.scale * score);
      }
      double m = -INFINITY, z = 0;
      for (double x : s) m = std::max(m, x);
      for (double& x : s) z += (x = std::exp(x - m));
      for (size_t a = 0; a < s.size(); ++a) {
        for (auto [row, w] : slots[i][a].rows) {
          for (int64_t t = 0; t < d; ++t)
            out[qi * d + t] += s[a] / z * w * v[(kvh * n + row) * d + t];
        }
      }
    }
  }
  return out;
}

Gradients backward(const DilatedAttentionParams& p, const std::vector<double>& q,
                   const std::vector<double>& k, const std::vector<double>& v,
                   const std::vector<double>& grad_out) {
  const auto slots = build_slots(p);
  const int64_t n = p.seq_len, d = p.head_dim;
  Gradients g;
  g.q.assign(q.size(), 0.0);
  g.k.assign(k.size(), 0.0);
  g.v.assign(v.size(), 0.0);
  g.offsets.assign(static_cast<size_t>(p.num_offsets), 0.0);
  g.offsets_magnitude.assign(static_cast<size_t>(p.num_offsets), 0.0);
  for (int64_t bh = 0; bh < p.batch_heads; ++bh) {
    const int64_t kvh = bh / p.kv_group;  // the K/V head this query head reads (GQA)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t qi = bh * n + i;
      const auto& row = slots[i];
      std::vector<double> s, eff_v_dot;  // scores, dO . v_eff per slot
      for (const auto& slot : row) {
        double score = 0, dov = 0;
        for (auto [r, w] : slot.rows) {
          score += w * row_dot(q, qi, k, kvh * n + r, d);
          dov += w * row_dot(grad_out, qi, v, kvh * n + r, d);
        }
        s.push_back(p.scale * score);
        eff_v_dot.push_back(dov);
      }
      double m = -INFINITY, z = 0;
      for (double x : s) m = std::max(m, x);
      std::vector<double> prob(s.size());
      for (size_t a = 0; a < s.size(); ++a) z += (prob[a] = std::exp(s[a] - m));
      for (double& x : prob) x /= z;
      double di = 0;
      for (size_t a = 0; a < s.size(); ++a) di += prob[a] * eff_v_dot[a];
      for (size_t a = 0; a < s.size(); ++a) {
        const double ds = prob[a] * (eff_v_dot[a] - di);
        for (auto [r, w] : row[a].rows) {
          const int64_t kr = kvh * n + r;
          for (int64_t t = 0; t < d; ++t) {
            g.q[qi * d + t] += p.scale * ds * w * k[kr * d + t];
            g.k[kr * d + t] += p.scale * ds * w * q[qi * d + t];
            g.v[kr * d + t] += prob[a] * w * grad_out[qi * d + t];
          }
        }
        if (row[a].offset_index >= 0 && row[a].hi_row >= 0) {
          const int64_t hi = kvh * n + row[a].hi_row, lo = kvh * n + row[a].lo_row;
          const double dsdx = p.scale * (row_dot(q, qi, k, hi, d) - row_dot(q, qi, k, lo, d));
          const double dodx = row_dot(grad_out, qi, v, hi, d) - row_dot(grad_out, qi, v, lo, d);
          const auto j = static_cast<size_t>(row[a].offset_index);
          g.offsets[j] += ds * dsdx + prob[a] * dodx;
          g.offsets_magnitude[j] += std::abs(ds * dsdx) + std::abs(prob[a] * dodx);
        }
      }
    }
  }
  return g;
}

}  // namespace reach::kernels::reference
