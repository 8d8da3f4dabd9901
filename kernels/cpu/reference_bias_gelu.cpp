#include "kernels/cpu/reference_bias_gelu.hpp"

#include <cmath>
#include <stdexcept>

namespace reach::kernels::cpu {
namespace {

constexpr double kSqrtHalf = 0.70710678118654752440;    // 1 / sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;  // 1 / sqrt(2 pi)

double gelu(double x) { return 0.5 * x * (1.0 + std::erf(x * kSqrtHalf)); }
double gelu_grad(double x) {
  return 0.5 * (1.0 + std::erf(x * kSqrtHalf)) + x * std::exp(-0.5 * x * x) * kInvSqrt2Pi;
}

void check(int64_t rows, int64_t cols, size_t h0, size_t bias) {
  if (rows < 0 || cols < 0) throw std::invalid_argument("bias_gelu: rows and cols must be >= 0");
  if (h0 != static_cast<size_t>(rows * cols) || bias != static_cast<size_t>(cols)) {
    throw std::invalid_argument("bias_gelu: h0 must be [rows, cols] and bias [cols]");
  }
}

}  // namespace

void reference_bias_gelu_forward(int64_t rows, int64_t cols, const std::vector<double>& h0,
                                 const std::vector<double>& bias, std::vector<double>& y) {
  check(rows, cols, h0.size(), bias.size());
  y.resize(h0.size());
  const auto n = static_cast<size_t>(cols);
  for (size_t i = 0; i < h0.size(); ++i) y[i] = gelu(h0[i] + bias[i % n]);
}

void reference_bias_gelu_backward(int64_t rows, int64_t cols, const std::vector<double>& dy,
                                  const std::vector<double>& h0, const std::vector<double>& bias,
                                  std::vector<double>& dh, std::vector<double>& dbias) {
  check(rows, cols, h0.size(), bias.size());
  if (dy.size() != h0.size()) throw std::invalid_argument("bias_gelu: dy must have h0's size");
  dh.resize(h0.size());
  dbias.assign(bias.size(), 0.0);
  const auto n = static_cast<size_t>(cols);
  for (size_t i = 0; i < h0.size(); ++i) {
    dh[i] = dy[i] * gelu_grad(h0[i] + bias[i % n]);
    dbias[i % n] += dh[i];
  }
}

}  // namespace reach::kernels::cpu
