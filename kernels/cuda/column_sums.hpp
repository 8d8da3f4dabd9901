// Column sums of a float32 matrix on a CUDA GPU: out[c] = sum_r in[r, c], accumulated in float64
// in a fixed order (bit-for-bit the same every run) and rounded once. For the per-block partial
// sums the fused kernels leave behind (the norms' dgamma / dbeta, bias + GELU's dbias: [a few
// hundred, dim]) and a bf16 linear's bias gradient, where torch's sum(0) took ~11 us a call for 0.5
// MB (82 calls, 0.9 ms of the paper preset's training step on the H200). float64 reference: the
// same sum on the host, in the harness (tests/kernels/block_ops_cuda_test.cpp). Raw device
// pointers, no torch, no CUDA headers.
#pragma once

#include <cstdint>

namespace reach::kernels::gpu {

// in [rows, cols] float32, row-major; out [cols] float32 (not aliasing in). rows, cols >= 1.
void column_sums_cuda(int64_t rows, int64_t cols, const float* in, float* out, void* stream);

// The same for a bf16 matrix (a linear layer's output gradient, whose column sums are its bias
// gradient: torch's sum(0) read [65,536, 512] bf16 at ~1.1 TB/s, 1.0 ms of the paper preset's step
// in 16 calls). Two passes: groups of 256 rows summed in float32 per column (16-byte loads of 8
// columns when cols % 8 == 0 and in is 16-byte aligned) into workspace
// [column_sums_bf16_workspace_rows(rows), cols] float32, then column_sums_cuda over those.
int64_t column_sums_bf16_workspace_rows(int64_t rows);
void column_sums_bf16_cuda(int64_t rows, int64_t cols, const void* in, float* workspace, float* out,
                           void* stream);

}  // namespace reach::kernels::gpu
