#include "kernels/cpu/reference_swiglu.hpp"

#include <cmath>
#include <stdexcept>

namespace reach::kernels::cpu {
namespace {

double sigmoid(double a) { return 1.0 / (1.0 + std::exp(-a)); }

}  // namespace

void reference_swiglu_forward(const std::vector<double>& a, const std::vector<double>& b,
                              std::vector<double>& y) {
  if (a.size() != b.size()) throw std::invalid_argument("swiglu: a and b must have one size");
  y.resize(a.size());
  for (size_t i = 0; i < a.size(); ++i) y[i] = a[i] * sigmoid(a[i]) * b[i];
}

void reference_swiglu_backward(const std::vector<double>& dy, const std::vector<double>& a,
                               const std::vector<double>& b, std::vector<double>& da,
                               std::vector<double>& db) {
  if (a.size() != b.size() || dy.size() != a.size()) {
    throw std::invalid_argument("swiglu: dy, a and b must have one size");
  }
  da.resize(a.size());
  db.resize(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const double s = sigmoid(a[i]);
    da[i] = dy[i] * b[i] * s * (1.0 + a[i] * (1.0 - s));
    db[i] = dy[i] * a[i] * s;
  }
}

}  // namespace reach::kernels::cpu
