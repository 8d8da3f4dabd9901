#include "kernels/cpu/reference_add_layer_norm.hpp"

#include <cmath>
#include <stdexcept>

namespace reach::kernels::cpu {
namespace {

void check(int64_t rows, int64_t dim, const std::vector<double>& x, const std::vector<double>& r) {
  if (rows < 1 || dim < 1) throw std::invalid_argument("add_layer_norm: rows and dim must be >= 1");
  if (x.size() != static_cast<size_t>(rows * dim) || (!r.empty() && r.size() != x.size())) {
    throw std::invalid_argument("add_layer_norm: x and r must hold rows * dim values");
  }
}

}  // namespace

void reference_add_layer_norm_forward(int64_t rows, int64_t dim, const std::vector<double>& x,
                                      const std::vector<double>& r,
                                      const std::vector<double>& gamma,
                                      const std::vector<double>& beta, double eps,
                                      std::vector<double>& h, std::vector<double>& y,
                                      std::vector<double>& mean, std::vector<double>& rstd) {
  check(rows, dim, x, r);
  h = x;
  if (!r.empty()) {
    for (size_t i = 0; i < h.size(); ++i) h[i] += r[i];
  }
  y.assign(h.size(), 0.0);
  mean.assign(static_cast<size_t>(rows), 0.0);
  rstd = mean;
  const auto n = static_cast<double>(dim);
  for (int64_t row = 0; row < rows; ++row) {
    const double* v = h.data() + row * dim;
    double m = 0;
    for (int64_t c = 0; c < dim; ++c) m += v[c];
    m /= n;
    double var = 0;
    for (int64_t c = 0; c < dim; ++c) var += (v[c] - m) * (v[c] - m);
    const double s = 1.0 / std::sqrt(var / n + eps);
    for (int64_t c = 0; c < dim; ++c) {
      y[static_cast<size_t>(row * dim + c)] =
          (v[c] - m) * s * gamma[static_cast<size_t>(c)] + beta[static_cast<size_t>(c)];
    }
    mean[static_cast<size_t>(row)] = m;
    rstd[static_cast<size_t>(row)] = s;
  }
}

void reference_add_layer_norm_backward(int64_t rows, int64_t dim, const std::vector<double>& dy,
                                       const std::vector<double>& dh, const std::vector<double>& h,
                                       const std::vector<double>& gamma, double eps,
                                       std::vector<double>& dx, std::vector<double>& dgamma,
                                       std::vector<double>& dbeta) {
  check(rows, dim, dy, dh);
  dx.assign(dy.size(), 0.0);
  dgamma.assign(static_cast<size_t>(dim), 0.0);
  dbeta = dgamma;
  const auto n = static_cast<double>(dim);
  std::vector<double> xhat(static_cast<size_t>(dim)), g(static_cast<size_t>(dim));
  for (int64_t row = 0; row < rows; ++row) {
    const double* v = h.data() + row * dim;
    double m = 0;
    for (int64_t c = 0; c < dim; ++c) m += v[c];
    m /= n;
    double var = 0;
    for (int64_t c = 0; c < dim; ++c) var += (v[c] - m) * (v[c] - m);
    const double s = 1.0 / std::sqrt(var / n + eps);
    double sum_g = 0, sum_gx = 0;
    for (int64_t c = 0; c < dim; ++c) {
      const auto i = static_cast<size_t>(row * dim + c);
      xhat[static_cast<size_t>(c)] = (v[c] - m) * s;
      g[static_cast<size_t>(c)] = dy[i] * gamma[static_cast<size_t>(c)];
      sum_g += g[static_cast<size_t>(c)];
      sum_gx += g[static_cast<size_t>(c)] * xhat[static_cast<size_t>(c)];
      dgamma[static_cast<size_t>(c)] += dy[i] * xhat[static_cast<size_t>(c)];
      dbeta[static_cast<size_t>(c)] += dy[i];
    }
    for (int64_t c = 0; c < dim; ++c) {
      const auto i = static_cast<size_t>(row * dim + c);
      const auto cc = static_cast<size_t>(c);
      dx[i] = s * (g[cc] - sum_g / n - xhat[cc] * sum_gx / n) + (dh.empty() ? 0.0 : dh[i]);
    }
  }
}

}  // namespace reach::kernels::cpu
