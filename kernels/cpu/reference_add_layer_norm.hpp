// float64 reference of the fused residual add + LayerNorm or RMSNorm
// (kernels/cuda/add_layer_norm.hpp): per row of D values, h = x + r (r optional: h = x),
// LayerNorm: y = (h - mean) * rstd * gamma + beta, rstd = 1 / sqrt(var + eps) with the biased
// variance (torch's layer_norm); RMSNorm: y = h * rstd * gamma, rstd = 1 / sqrt(mean(h^2) + eps)
// (model::RmsNormImpl). Backward: from dy and the gradient already flowing into h from later use
// (dh, optional) to dx (= dr), dgamma (and LayerNorm's dbeta).
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

// RMSNorm: x, r (empty: none) of rows * dim -> h, y (rows * dim), rstd (rows).
void reference_add_rms_norm_forward(int64_t rows, int64_t dim, const std::vector<double>& x,
                                    const std::vector<double>& r, const std::vector<double>& gamma,
                                    double eps, std::vector<double>& h, std::vector<double>& y,
                                    std::vector<double>& rstd);

// RMSNorm: dy, dh (empty: none) of rows * dim, h as the forward gave it -> dx (the gradient of x
// and of r), dgamma (dim).
void reference_add_rms_norm_backward(int64_t rows, int64_t dim, const std::vector<double>& dy,
                                     const std::vector<double>& dh, const std::vector<double>& h,
                                     const std::vector<double>& gamma, double eps,
                                     std::vector<double>& dx, std::vector<double>& dgamma);

}  // namespace reach::kernels::cpu
