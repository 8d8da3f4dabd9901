#include "kernels/cpu/reference_add_layer_norm.hpp"

#include <cmath>
#include <stdexcept>
#include <utility>

namespace reach::kernels::cpu {
namespace {

void check(int64_t rows, int64_t dim, const std::vector<double>& x, const std::vector<double>& r,
           const std::vector<double>& gamma) {
  if (rows < 1 || dim < 1) throw std::invalid_argument("add_layer_norm: rows and dim must be >= 1");
  if (x.size() != static_cast<size_t>(rows * dim) || (!r.empty() && r.size() != x.size())) {
    throw std::invalid_argument("add_layer_norm: x and r must hold rows * dim values");
  }
  if (gamma.size() != static_cast<size_t>(dim)) {
    throw std::invalid_argument("add_layer_norm: gamma must hold dim values");
  }
}

// A row's mean (0 without centring: RMSNorm) and 1 / sqrt(mean((v - mean)^2) + eps).
std::pair<double, double> row_statistics(const double* v, int64_t dim, bool centre, double eps) {
  const auto n = static_cast<double>(dim);
  double m = 0;
  if (centre) {
    for (int64_t c = 0; c < dim; ++c) m += v[c];
    m /= n;
  }
  double var = 0;
  for (int64_t c = 0; c < dim; ++c) var += (v[c] - m) * (v[c] - m);
  return {m, 1.0 / std::sqrt(var / n + eps)};
}

// LayerNorm (centre, beta) or RMSNorm (neither: beta empty).
void forward(int64_t rows, int64_t dim, const std::vector<double>& x, const std::vector<double>& r,
             const std::vector<double>& gamma, const std::vector<double>& beta, bool centre,
             double eps, std::vector<double>& h, std::vector<double>& y, std::vector<double>& mean,
             std::vector<double>& rstd) {
  check(rows, dim, x, r, gamma);
  h = x;
  if (!r.empty()) {
    for (size_t i = 0; i < h.size(); ++i) h[i] += r[i];
  }
  y.assign(h.size(), 0.0);
  mean.assign(static_cast<size_t>(rows), 0.0);
  rstd = mean;
  for (int64_t row = 0; row < rows; ++row) {
    const double* v = h.data() + row * dim;
    const auto [m, s] = row_statistics(v, dim, centre, eps);
    for (int64_t c = 0; c < dim; ++c) {
      const auto cc = static_cast<size_t>(c);
      y[static_cast<size_t>(row * dim + c)] =
          (v[c] - m) * s * gamma[cc] + (beta.empty() ? 0.0 : beta[cc]);
    }
    mean[static_cast<size_t>(row)] = m;
    rstd[static_cast<size_t>(row)] = s;
  }
}

// dx = s * (g - mean(g) - xhat * mean(g * xhat)) + dh with g = dy * gamma, xhat = (h - m) * s;
// RMSNorm (no centring) has no mean(g) term.
void backward(int64_t rows, int64_t dim, const std::vector<double>& dy,
              const std::vector<double>& dh, const std::vector<double>& h,
              const std::vector<double>& gamma, bool centre, double eps, std::vector<double>& dx,
              std::vector<double>& dgamma, std::vector<double>& dbeta) {
  check(rows, dim, dy, dh, gamma);
  if (h.size() != dy.size()) throw std::invalid_argument("add_layer_norm: h must match dy");
  dx.assign(dy.size(), 0.0);
  dgamma.assign(static_cast<size_t>(dim), 0.0);
  dbeta = dgamma;
  const auto n = static_cast<double>(dim);
  std::vector<double> xhat(static_cast<size_t>(dim)), g(static_cast<size_t>(dim));
  for (int64_t row = 0; row < rows; ++row) {
    const double* v = h.data() + row * dim;
    const auto [m, s] = row_statistics(v, dim, centre, eps);
    double sum_g = 0, sum_gx = 0;
    for (int64_t c = 0; c < dim; ++c) {
      const auto i = static_cast<size_t>(row * dim + c);
      const auto cc = static_cast<size_t>(c);
      xhat[cc] = (v[c] - m) * s;
      g[cc] = dy[i] * gamma[cc];
      sum_g += g[cc];
      sum_gx += g[cc] * xhat[cc];
      dgamma[cc] += dy[i] * xhat[cc];
      dbeta[cc] += dy[i];
    }
    if (!centre) sum_g = 0;
    for (int64_t c = 0; c < dim; ++c) {
      const auto i = static_cast<size_t>(row * dim + c);
      const auto cc = static_cast<size_t>(c);
      dx[i] = s * (g[cc] - sum_g / n - xhat[cc] * sum_gx / n) + (dh.empty() ? 0.0 : dh[i]);
    }
  }
}

}  // namespace

void reference_add_layer_norm_forward(int64_t rows, int64_t dim, const std::vector<double>& x,
                                      const std::vector<double>& r,
                                      const std::vector<double>& gamma,
                                      const std::vector<double>& beta, double eps,
                                      std::vector<double>& h, std::vector<double>& y,
                                      std::vector<double>& mean, std::vector<double>& rstd) {
  if (beta.size() != static_cast<size_t>(dim)) {
    throw std::invalid_argument("add_layer_norm: beta must hold dim values");
  }
  forward(rows, dim, x, r, gamma, beta, /*centre=*/true, eps, h, y, mean, rstd);
}

void reference_add_layer_norm_backward(int64_t rows, int64_t dim, const std::vector<double>& dy,
                                       const std::vector<double>& dh, const std::vector<double>& h,
                                       const std::vector<double>& gamma, double eps,
                                       std::vector<double>& dx, std::vector<double>& dgamma,
                                       std::vector<double>& dbeta) {
  backward(rows, dim, dy, dh, h, gamma, /*centre=*/true, eps, dx, dgamma, dbeta);
}

void reference_add_rms_norm_forward(int64_t rows, int64_t dim, const std::vector<double>& x,
                                    const std::vector<double>& r, const std::vector<double>& gamma,
                                    double eps, std::vector<double>& h, std::vector<double>& y,
                                    std::vector<double>& rstd) {
  std::vector<double> mean;
  forward(rows, dim, x, r, gamma, {}, /*centre=*/false, eps, h, y, mean, rstd);
}

void reference_add_rms_norm_backward(int64_t rows, int64_t dim, const std::vector<double>& dy,
                                     const std::vector<double>& dh, const std::vector<double>& h,
                                     const std::vector<double>& gamma, double eps,
                                     std::vector<double>& dx, std::vector<double>& dgamma) {
  std::vector<double> dbeta;
  backward(rows, dim, dy, dh, h, gamma, /*centre=*/false, eps, dx, dgamma, dbeta);
}

}  // namespace reach::kernels::cpu
