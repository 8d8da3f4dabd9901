// Fused bias add + GELU on a CUDA GPU (float64 reference: kernels/cpu/reference_bias_gelu.hpp):
// the GELU MLP's y = gelu(h0 + bias) forward, with h0 = x W^T the fc layer's product without its
// bias, and dh = dy * gelu'(h0 + bias) backward together with the bias gradient's per-block
// column sums, where the unfused step adds the bias in the matrix product, runs gelu forward and
// gelu's backward, and then re-reads the whole [rows, cols] gradient to sum its columns. GELU is
// the exact (erf) one, torch's default: gelu(x) = 0.5 x (1 + erf(x / sqrt 2)), gelu'(x) =
// 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi). h0, y, dy and dh share one type (bf16
// under autocast, or float32); bias and the partial sums are float32; the arithmetic is float32,
// rounded once; 1 + erf comes from erfc's Chebyshev fit (relative error < 1.2e-7, see
// bias_gelu_kernels.cuh): backward 0.256 vs 0.332 ms with erff at 65,536 x 2,048 bf16 on an H200,
// one row a block; bench/cuda/bias_gelu_variants.cu). Fast kernels (16-byte loads and stores, eight
// columns a thread) when cols % 8 == 0 and every pointer is 16-byte aligned; column by column
// otherwise. Raw device pointers, no torch, no CUDA headers.
#pragma once

#include <cstdint>

#include "kernels/cuda/dilated_attention.hpp"  // ScalarType

namespace reach::kernels::gpu {

// Most columns the kernels take (the column tiles of the generic kernels go in the grid's y).
inline constexpr int64_t kMaxBiasGeluCols = int64_t{65535} * 32;

// Rows of the backward's partial bias sums for h0 [rows, cols] of `type` (1..256, at most
// ceil(rows / 8)): the row groups of its grid, one wave of blocks on the current device (its SM
// count), so ask on the device the backward will run on. The same for the fast and the generic
// kernels (pointer alignment does not enter). rows, cols >= 1.
int64_t bias_gelu_backward_partial_rows(int64_t rows, int64_t cols, ScalarType type);

// h0 [rows, cols] of `type`, bias float32 [cols] -> y [rows, cols] of `type`. rows, cols >= 1.
void bias_gelu_forward_cuda(int64_t rows, int64_t cols, ScalarType type, const void* h0,
                            const float* bias, void* y, void* stream);

// dy, h0 [rows, cols] of `type`, bias float32 [cols] -> dh [rows, cols] of `type` and
// dbias_partial float32 [bias_gelu_backward_partial_rows(rows, cols, type), cols]: each row one
// block row group's column sums of dh (its float32 values, before rounding to `type`); the bias
// gradient is their sum over rows.
void bias_gelu_backward_cuda(int64_t rows, int64_t cols, ScalarType type, const void* dy,
                             const void* h0, const float* bias, void* dh, float* dbias_partial,
                             void* stream);

}  // namespace reach::kernels::gpu
