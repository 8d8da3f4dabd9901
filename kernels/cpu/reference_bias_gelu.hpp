// float64 reference of the fused bias add + GELU (kernels/cuda/bias_gelu.hpp): the GELU MLP's
// y = gelu(h0 + bias) over the rows of h0 [rows, cols], bias [cols], with the exact (erf) GELU
// gelu(x) = 0.5 x (1 + erf(x / sqrt 2)). Backward: dh = dy * gelu'(h0 + bias), gelu'(x) =
// 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi), and dbias = the column sums of dh.
#pragma once

#include <cstdint>
#include <vector>

namespace reach::kernels::cpu {

// h0 [rows, cols], bias [cols] -> y [rows, cols].
void reference_bias_gelu_forward(int64_t rows, int64_t cols, const std::vector<double>& h0,
                                 const std::vector<double>& bias, std::vector<double>& y);

// dy, h0 [rows, cols], bias [cols] -> dh [rows, cols], dbias [cols].
void reference_bias_gelu_backward(int64_t rows, int64_t cols, const std::vector<double>& dy,
                                  const std::vector<double>& h0, const std::vector<double>& bias,
                                  std::vector<double>& dh, std::vector<double>& dbias);

}  // namespace reach::kernels::cpu
