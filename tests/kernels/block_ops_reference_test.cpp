// The float64 references of the fused block kernels (kernels/cpu/reference_rope_split.hpp,
// kernels/cpu/reference_add_layer_norm.hpp (LayerNorm and RMSNorm),
// kernels/cpu/reference_swiglu.hpp, kernels/cpu/reference_bias_gelu.hpp): forwards against
// independent formulations, and backwards against central finite differences of a random linear
// functional of the outputs. Bounds: the references are float64 and the losses are linear (RoPE)
// or smooth (the norms, SwiGLU, GELU) in the
// inputs, so finite differences with h = 1e-6 agree to ~1e-8; 1e-6 leaves a margin while any
// wrong term (a sign, a missing 1/D) is O(1). Forwards: 1e-12 (float64 rounding), 1e-9 where a
// statistic is recomputed from outputs of size up to ~10.
#include <algorithm>
#include <cmath>
#include <complex>
#include <utility>

#include "kernels/cpu/reference_add_layer_norm.hpp"
#include "kernels/cpu/reference_bias_gelu.hpp"
#include "kernels/cpu/reference_rope_split.hpp"
#include "kernels/cpu/reference_swiglu.hpp"
#include "tests/kernels/harness.hpp"

namespace reach::harness {
namespace {

using kernels::cpu::RopeSplitShape;

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

REACH_OP_CASES(rope_split_reference_cases) {
  for (const RopeSplitShape s : {RopeSplitShape{1, 3, 1, 2}, RopeSplitShape{2, 5, 3, 8}}) {
    const std::string shape = shape_part("b", static_cast<double>(s.batch)) + "_" +
                              shape_part("t", static_cast<double>(s.seq_len)) + "_" +
                              shape_part("h", static_cast<double>(s.heads)) + "_" +
                              shape_part("d", static_cast<double>(s.head_dim));
    registry.add(
        {"rope_split", "reference", "f64", shape, "forward", [s](Report& r) {
           Rng rng(seed_of("rope_split_forward" + std::to_string(s.head_dim)));
           const auto qkv = rng.normal(static_cast<size_t>(s.qkv_count()));
           const auto angle = rng.uniform(static_cast<size_t>(s.table_count()), -3, 3);
           std::vector<double> cos(angle.size()), sin(angle.size());
           for (size_t i = 0; i < angle.size(); ++i) {
             cos[i] = std::cos(angle[i]);
             sin[i] = std::sin(angle[i]);
           }
           std::vector<double> q, k, v;
           kernels::cpu::reference_rope_split_forward(s, qkv, cos, sin, q, k, v);
           // Independent: pair (x_i, x_{i + hd/2}) as a complex number times e^{i angle}.
           std::vector<double> want_q(q.size()), want_k(q.size()), want_v(q.size());
           const int64_t half = s.head_dim / 2;
           for (int64_t b = 0; b < s.batch; ++b) {
             for (int64_t t = 0; t < s.seq_len; ++t) {
               for (int64_t p = 0; p < 3; ++p) {
                 for (int64_t h = 0; h < s.heads; ++h) {
                   for (int64_t i = 0; i < half; ++i) {
                     const auto at = [&](int64_t d) {
                       return qkv[static_cast<size_t>(
                           (((b * s.seq_len + t) * 3 + p) * s.heads + h) * s.head_dim + d)];
                     };
                     std::complex<double> z(at(i), at(i + half));
                     if (p < 2) z *= std::polar(1.0, angle[static_cast<size_t>(t * half + i)]);
                     auto& out = p == 0 ? want_q : p == 1 ? want_k : want_v;
                     const auto o =
                         static_cast<size_t>(((b * s.heads + h) * s.seq_len + t) * s.head_dim);
                     out[o + static_cast<size_t>(i)] = z.real();
                     out[o + static_cast<size_t>(i + half)] = z.imag();
                   }
                 }
               }
             }
           }
           r.max_diff("q", q, want_q, 1e-12);
           r.max_diff("k", k, want_k, 1e-12);
           r.max_diff("v", v, want_v, 1e-12);
         }});
    registry.add({"rope_split", "reference", "f64", shape, "fd", [s](Report& r) {
                    Rng rng(seed_of("rope_split_fd" + std::to_string(s.head_dim)));
                    auto qkv = rng.normal(static_cast<size_t>(s.qkv_count()));
                    const auto angle = rng.uniform(static_cast<size_t>(s.table_count()), -3, 3);
                    std::vector<double> cos(angle.size()), sin(angle.size());
                    for (size_t i = 0; i < angle.size(); ++i) {
                      cos[i] = std::cos(angle[i]);
                      sin[i] = std::sin(angle[i]);
                    }
                    const auto n = static_cast<size_t>(s.head_count());
                    const auto wq = rng.normal(n), wk = rng.normal(n), wv = rng.normal(n);
                    std::vector<double> dqkv;
                    kernels::cpu::reference_rope_split_backward(s, wq, wk, wv, cos, sin, dqkv);
                    const auto loss = [&] {
                      std::vector<double> q, k, v;
                      kernels::cpu::reference_rope_split_forward(s, qkv, cos, sin, q, k, v);
                      return dot(q, wq) + dot(k, wk) + dot(v, wv);
                    };
                    r.fd("dqkv", finite_difference_error(qkv, dqkv, loss), 1e-6);
                  }});
  }
}

REACH_OP_CASES(add_layer_norm_reference_cases) {
  for (const bool with_r : {false, true}) {
    for (const int64_t dim : {int64_t{1}, int64_t{7}, int64_t{96}}) {
      const int64_t rows = 5;
      const std::string shape = shape_part("rows", static_cast<double>(rows)) + "_" +
                                shape_part("d", static_cast<double>(dim)) + (with_r ? "_r" : "");
      registry.add({"add_layer_norm", "reference", "f64", shape, "forward", [=](Report& r) {
                      Rng rng(seed_of("add_layer_norm_forward" + shape));
                      const auto x = rng.normal(static_cast<size_t>(rows * dim), 2.0);
                      const auto res = with_r ? rng.normal(x.size()) : std::vector<double>{};
                      const auto gamma = rng.normal(static_cast<size_t>(dim));
                      const auto beta = rng.normal(static_cast<size_t>(dim));
                      std::vector<double> h, y, mean, rstd;
                      kernels::cpu::reference_add_layer_norm_forward(rows, dim, x, res, gamma, beta,
                                                                     1e-5, h, y, mean, rstd);
                      // Undo the affine map: each row of (y - beta) / gamma has mean 0 and
                      // variance var / (var + eps); h is x + r.
                      double worst_mean = 0, worst_var = 0, worst_h = 0;
                      for (int64_t row = 0; row < rows; ++row) {
                        double m = 0, var = 0, zm = 0, zv = 0;
                        for (int64_t c = 0; c < dim; ++c) {
                          const auto i = static_cast<size_t>(row * dim + c);
                          worst_h =
                              std::max(worst_h, std::abs(h[i] - x[i] - (with_r ? res[i] : 0)));
                          m += h[i] / static_cast<double>(dim);
                        }
                        for (int64_t c = 0; c < dim; ++c) {
                          const auto i = static_cast<size_t>(row * dim + c);
                          var += (h[i] - m) * (h[i] - m) / static_cast<double>(dim);
                          const double z =
                              (y[i] - beta[static_cast<size_t>(c)]) / gamma[static_cast<size_t>(c)];
                          zm += z / static_cast<double>(dim);
                          zv += z * z / static_cast<double>(dim);
                        }
                        worst_mean = std::max(worst_mean, std::abs(zm));
                        worst_var = std::max(worst_var, std::abs(zv - var / (var + 1e-5)));
                        worst_mean =
                            std::max(worst_mean, std::abs(mean[static_cast<size_t>(row)] - m));
                      }
                      r.lt("h = x + r", worst_h, 1e-12);
                      r.lt("row mean of the normalised values", worst_mean, 1e-9);
                      r.lt("row variance of the normalised values", worst_var, 1e-9);
                    }});
      for (const bool with_dh : {false, true}) {
        registry.add({"add_layer_norm", "reference", "f64", shape + (with_dh ? "_dh" : ""), "fd",
                      [=](Report& r) {
                        Rng rng(seed_of("add_layer_norm_fd" + shape + (with_dh ? "dh" : "")));
                        const auto n = static_cast<size_t>(rows * dim);
                        auto x = rng.normal(n, 2.0);
                        auto res = with_r ? rng.normal(n) : std::vector<double>{};
                        auto gamma = rng.normal(static_cast<size_t>(dim));
                        auto beta = rng.normal(static_cast<size_t>(dim));
                        const auto wy = rng.normal(n);
                        const auto wh = with_dh ? rng.normal(n) : std::vector<double>{};
                        const auto loss = [&] {
                          std::vector<double> h, y, mean, rstd;
                          kernels::cpu::reference_add_layer_norm_forward(
                              rows, dim, x, res, gamma, beta, 1e-5, h, y, mean, rstd);
                          return dot(y, wy) + (with_dh ? dot(h, wh) : 0.0);
                        };
                        std::vector<double> h, y, mean, rstd, dx, dgamma, dbeta;
                        kernels::cpu::reference_add_layer_norm_forward(
                            rows, dim, x, res, gamma, beta, 1e-5, h, y, mean, rstd);
                        kernels::cpu::reference_add_layer_norm_backward(rows, dim, wy, wh, h, gamma,
                                                                        1e-5, dx, dgamma, dbeta);
                        r.fd("dx", finite_difference_error(x, dx, loss), 1e-6);
                        if (with_r) r.fd("dr", finite_difference_error(res, dx, loss), 1e-6);
                        r.fd("dgamma", finite_difference_error(gamma, dgamma, loss), 1e-6);
                        r.fd("dbeta", finite_difference_error(beta, dbeta, loss), 1e-6);
                      }});
      }
    }
  }
}

// RMSNorm (eps 1e-6, model::RmsNormImpl's): independent check of the forward from its defining
// properties: each row of y / gamma is k * h with one k > 0 per row, and its mean square is
// ms / (ms + eps) (ms = mean(h^2)); the two fix k = 1 / sqrt(ms + eps) without that formula.
REACH_OP_CASES(add_rms_norm_reference_cases) {
  constexpr double kEps = 1e-6;
  for (const bool with_r : {false, true}) {
    for (const int64_t dim : {int64_t{1}, int64_t{7}, int64_t{96}}) {
      const int64_t rows = 5;
      const std::string shape = shape_part("rows", static_cast<double>(rows)) + "_" +
                                shape_part("d", static_cast<double>(dim)) + (with_r ? "_r" : "");
      registry.add(
          {"add_rms_norm", "reference", "f64", shape, "forward", [=](Report& r) {
             Rng rng(seed_of("add_rms_norm_forward" + shape));
             const auto x = rng.normal(static_cast<size_t>(rows * dim), 2.0);
             const auto res = with_r ? rng.normal(x.size()) : std::vector<double>{};
             const auto gamma = rng.normal(static_cast<size_t>(dim));
             std::vector<double> h, y, rstd;
             kernels::cpu::reference_add_rms_norm_forward(rows, dim, x, res, gamma, kEps, h, y,
                                                          rstd);
             double worst_h = 0, worst_ratio = 0, worst_square = 0, worst_rstd = 0;
             double non_positive = 0;
             for (int64_t row = 0; row < rows; ++row) {
               const auto at = [&](int64_t c) { return static_cast<size_t>(row * dim + c); };
               const double k = y[at(0)] / gamma[0] / h[at(0)];
               double ms = 0, zs = 0;
               for (int64_t c = 0; c < dim; ++c) {
                 const auto i = at(c);
                 worst_h = std::max(worst_h, std::abs(h[i] - x[i] - (with_r ? res[i] : 0)));
                 const double z = y[i] / gamma[static_cast<size_t>(c)];
                 worst_ratio = std::max(worst_ratio, std::abs(z / h[i] - k) / k);
                 ms += h[i] * h[i] / static_cast<double>(dim);
                 zs += z * z / static_cast<double>(dim);
               }
               non_positive += k > 0 ? 0 : 1;
               worst_square = std::max(worst_square, std::abs(zs - ms / (ms + kEps)));
               worst_rstd = std::max(worst_rstd, std::abs(rstd[static_cast<size_t>(row)] - k) / k);
             }
             r.lt("h = x + r", worst_h, 1e-12);
             r.lt("row spread of y / (gamma h), relative", worst_ratio, 1e-12);
             r.lt("rows with y / (gamma h) <= 0", non_positive, 0.5);
             r.lt("row mean square of y / gamma", worst_square, 1e-9);
             r.lt("rstd against y / (gamma h), relative", worst_rstd, 1e-12);
           }});
      for (const bool with_dh : {false, true}) {
        registry.add({"add_rms_norm", "reference", "f64", shape + (with_dh ? "_dh" : ""), "fd",
                      [=](Report& r) {
                        Rng rng(seed_of("add_rms_norm_fd" + shape + (with_dh ? "dh" : "")));
                        const auto n = static_cast<size_t>(rows * dim);
                        auto x = rng.normal(n, 2.0);
                        auto res = with_r ? rng.normal(n) : std::vector<double>{};
                        auto gamma = rng.normal(static_cast<size_t>(dim));
                        const auto wy = rng.normal(n);
                        const auto wh = with_dh ? rng.normal(n) : std::vector<double>{};
                        const auto loss = [&] {
                          std::vector<double> h, y, rstd;
                          kernels::cpu::reference_add_rms_norm_forward(rows, dim, x, res, gamma,
                                                                       kEps, h, y, rstd);
                          return dot(y, wy) + (with_dh ? dot(h, wh) : 0.0);
                        };
                        std::vector<double> h, y, rstd, dx, dgamma;
                        kernels::cpu::reference_add_rms_norm_forward(rows, dim, x, res, gamma, kEps,
                                                                     h, y, rstd);
                        kernels::cpu::reference_add_rms_norm_backward(rows, dim, wy, wh, h, gamma,
                                                                      kEps, dx, dgamma);
                        r.fd("dx", finite_difference_error(x, dx, loss), 1e-6);
                        if (with_r) r.fd("dr", finite_difference_error(res, dx, loss), 1e-6);
                        r.fd("dgamma", finite_difference_error(gamma, dgamma, loss), 1e-6);
                      }});
      }
    }
  }
}

// SwiGLU: the forward against silu written through tanh (sigmoid(a) = (1 + tanh(a / 2)) / 2),
// the backward against finite differences; gates spread over [-8, 8] so both of silu's tails
// and its minimum (a ~ -1.28) are in the sample.
REACH_OP_CASES(swiglu_reference_cases) {
  for (const size_t count : {size_t{1}, size_t{13}, size_t{200}}) {
    const std::string shape = shape_part("n", static_cast<double>(count));
    registry.add({"swiglu", "reference", "f64", shape, "forward", [=](Report& r) {
                    Rng rng(seed_of("swiglu_forward" + shape));
                    const auto a = rng.uniform(count, -8, 8), b = rng.normal(count);
                    std::vector<double> y;
                    kernels::cpu::reference_swiglu_forward(a, b, y);
                    std::vector<double> want(count);
                    for (size_t i = 0; i < count; ++i) {
                      want[i] = a[i] * 0.5 * (1.0 + std::tanh(a[i] / 2.0)) * b[i];
                    }
                    r.max_scaled("y", y, want, 1e-12);
                  }});
    registry.add({"swiglu", "reference", "f64", shape, "fd", [=](Report& r) {
                    Rng rng(seed_of("swiglu_fd" + shape));
                    auto a = rng.uniform(count, -8, 8), b = rng.normal(count);
                    const auto wy = rng.normal(count);
                    const auto loss = [&] {
                      std::vector<double> y;
                      kernels::cpu::reference_swiglu_forward(a, b, y);
                      return dot(y, wy);
                    };
                    std::vector<double> da, db;
                    kernels::cpu::reference_swiglu_backward(wy, a, b, da, db);
                    r.fd("da", finite_difference_error(a, da, loss), 1e-6);
                    r.fd("db", finite_difference_error(b, db, loss), 1e-6);
                  }});
  }
}

// Bias + GELU: the forward against GELU written through erfc (x Phi(x), Phi(x) =
// erfc(-x / sqrt 2) / 2) on h0 + bias, the backward (dh and dbias) against finite differences;
// h0 + bias spread over about [-9, 9] so both of gelu's tails and its minimum (x ~ -0.75) are in
// the sample; one row, one column, and shapes with both several rows and columns (dbias sums
// rows).
REACH_OP_CASES(bias_gelu_reference_cases) {
  for (const auto& [rows_of, cols_of] :
       {std::pair<int64_t, int64_t>{1, 1}, std::pair<int64_t, int64_t>{1, 13},
        std::pair<int64_t, int64_t>{7, 1}, std::pair<int64_t, int64_t>{5, 12},
        std::pair<int64_t, int64_t>{20, 10}}) {
    const int64_t rows = rows_of, cols = cols_of;  // (copies the lambdas below can capture)
    const std::string shape = shape_part("rows", static_cast<double>(rows)) + "_" +
                              shape_part("cols", static_cast<double>(cols));
    const auto n = static_cast<size_t>(rows * cols), d = static_cast<size_t>(cols);
    registry.add({"bias_gelu", "reference", "f64", shape, "forward", [=](Report& r) {
                    Rng rng(seed_of("bias_gelu_forward" + shape));
                    const auto h0 = rng.uniform(n, -7, 7), bias = rng.uniform(d, -2, 2);
                    std::vector<double> y;
                    kernels::cpu::reference_bias_gelu_forward(rows, cols, h0, bias, y);
                    std::vector<double> want(n);
                    for (size_t i = 0; i < n; ++i) {
                      const double x = h0[i] + bias[i % d];
                      want[i] = x * 0.5 * std::erfc(-x / std::sqrt(2.0));
                    }
                    r.max_scaled("y", y, want, 1e-12);
                  }});
    registry.add({"bias_gelu", "reference", "f64", shape, "fd", [=](Report& r) {
                    Rng rng(seed_of("bias_gelu_fd" + shape));
                    auto h0 = rng.uniform(n, -7, 7), bias = rng.uniform(d, -2, 2);
                    const auto wy = rng.normal(n);
                    const auto loss = [&] {
                      std::vector<double> y;
                      kernels::cpu::reference_bias_gelu_forward(rows, cols, h0, bias, y);
                      return dot(y, wy);
                    };
                    std::vector<double> dh, dbias;
                    kernels::cpu::reference_bias_gelu_backward(rows, cols, wy, h0, bias, dh, dbias);
                    r.fd("dh", finite_difference_error(h0, dh, loss), 1e-6);
                    r.fd("dbias", finite_difference_error(bias, dbias, loss), 1e-6);
                  }});
  }
}

}  // namespace reach::harness
