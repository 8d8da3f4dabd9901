// Column sums of a float32 matrix on a CUDA GPU: out[c] = sum_r in[r, c], accumulated in float64
// in a fixed order (bit-for-bit the same every run) and rounded once. For the per-block partial
// sums the fused kernels leave behind (the norms' dgamma / dbeta, bias + GELU's dbias: [a few
// hundred, dim]), where torch's sum(0) took ~11 us a call for 0.5 MB (82 calls, 0.9 ms of the
// paper preset's training step on the H200). float64 reference: the same sum on the host, in the
// harness (tests/kernels/block_ops_cuda_test.cpp). Raw device pointers, no torch, no CUDA headers.
#pragma once

#include <cstdint>

namespace reach::kernels::gpu {

// in [rows, cols] float32, row-major; out [cols] float32 (not aliasing in). rows, cols >= 1.
void column_sums_cuda(int64_t rows, int64_t cols, const float* in, float* out, void* stream);

}  // namespace reach::kernels::gpu
