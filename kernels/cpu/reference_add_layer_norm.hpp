// float64 reference of the fused residual add + LayerNorm (kernels/cuda/add_layer_norm.hpp):
// per row of D values, h = x + r (r optional: h = x), y = (h - mean) * rstd * gamma + beta,
// rstd = 1 / sqrt(var + eps) with the biased variance (torch's layer_norm). Backward: from dy
// and the gradient already flowing into h from later use (dh, optional) to dx (= dr), dgamma,
// dbeta.
#pragma once

#include <cstdint>
#include <vector>

namespace reach::kernels::cpu {

// x, r (empty: none) of rows * dim -> h, y (rows * dim), mean, rstd (rows).
void reference_add_layer_norm_forward(int64_t rows, int64_t dim, const std::vector<double>& x,
                                      const std::vector<double>& r,
                                      const std::vector<double>& gamma,
                                      const std::vector<double>& beta, double eps,
                                      std::vector<double>& h, std::vector<double>& y,
                                      std::vector<double>& mean, std::vector<double>& rstd);

// dy, dh (empty: none) of rows * dim, h as the forward gave it -> dx (the gradient of x and
// of r), dgamma, dbeta (dim).
void reference_add_layer_norm_backward(int64_t rows, int64_t dim, const std::vector<double>& dy,
                                       const std::vector<double>& dh, const std::vector<double>& h,
                                       const std::vector<double>& gamma, double eps,
                                       std::vector<double>& dx, std::vector<double>& dgamma,
                                       std::vector<double>& dbeta);

}  // namespace reach::kernels::cpu
