// Torch adapters for the op harness (tests/kernels/harness.hpp): tensors to float64 host
// vectors, and finite differences over a tensor's elements.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <numeric>
#include <vector>

#include "tests/kernels/harness.hpp"

namespace reach::harness {

// The elements of t as float64 on the host, in row-major order.
inline std::vector<double> host_values(const torch::Tensor& t) {
  const auto c = t.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  const double* p = c.data_ptr<double>();
  return std::vector<double>(p, p + c.numel());
}

// Central differences of loss() along every element of the float64 CPU tensor x (modified in
// place under NoGradGuard and restored), against `analytic` (x's gradient, same shape).
inline FdResult finite_difference_error(torch::Tensor& x, const torch::Tensor& analytic,
                                        const std::function<double()>& loss, double h = 1e-6) {
  torch::NoGradGuard no_grad;
  auto flat = x.view({-1});
  const auto grad = host_values(analytic);
  std::vector<size_t> all(static_cast<size_t>(flat.numel()));
  std::iota(all.begin(), all.end(), size_t{0});
  return finite_difference_error(
      all, [&](size_t i) { return grad[i]; },
      [&](size_t i, double delta) {
        const auto t = static_cast<int64_t>(i);
        const double saved = flat[t].item<double>();
        flat[t] = saved + delta;
        const double l = loss();
        flat[t] = saved;
        return l;
      },
      h);
}

}  // namespace reach::harness
