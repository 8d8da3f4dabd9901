// Accuracy cases for the CUDA dilated-attention kernels against the float64 CPU
// reference, shared by the GoogleTest suite (CI: skips without a GPU) and the
// standalone checker that scripts/gpu-check runs on the GPU machine (no gtest there).
//
// Error rule (relative L2, ||x - ref|| / ||ref||, ref in float64 on the same inputs):
//  * float32: out, dq, dk, dv within 1e-4 and the offset gradient within 1e-3. The
//    kernels accumulate at most W + K (forward) or a few hundred (backward) float32
//    terms per element, eps 6e-8, so 1e-4 leaves a wide margin; the offset gradient
//    sums ~n * BH signed terms in float32 per block before a float64 reduction.
//  * bfloat16 (inputs rounded to bf16, ref on the rounded inputs): each output within
//    2x the error of the same computation done in bf16 by the reference, i.e. the
//    float64 result rounded to bf16 (FlashAttention's rule), plus 1e-4 of slack for
//    tensors whose bf16 rounding error is tiny. The offset gradient (a float64 output,
//    so no rounding to compare with) within 1e-2: it is computed from bf16 inputs and
//    the bf16-rounded forward output (rel. error 2^-9 ~ 2e-3 per term).
#pragma once

#include <string>
#include <vector>

namespace reach::tests {

struct CudaCase {
  bool bf16 = false;
  int batch_heads = 1;
  int seq_len = 1;
  int head_dim = 64;
  int window = 1;
  std::vector<double> offsets;
};

struct CudaCaseResult {
  std::string name;
  double err_out = 0, err_dq = 0, err_dk = 0, err_dv = 0, err_doff = 0;
  double bound_out = 0, bound_dq = 0, bound_dk = 0, bound_dv = 0, bound_doff = 0;
  bool all_written = true;  // no poisoned (NaN) element left in any output
  bool passed = false;
  std::string error;  // a thrown exception, if any
};

// True when a CUDA device is usable.
bool cuda_device_available();

// The shapes tested: n from 1 to 70,000, odd sizes, bf16 and float32, d 64 and 128,
// integer and fractional offsets, W >= n (dense causal), W = 1 and W spanning several
// 64-row chunks. bf16 cases with integer offsets run the tensor-core path (names end
// in "tc") for the forward and the backward without the offset gradient; the backward
// with the offset gradient always runs the CUDA-core path. Both backwards are checked.
std::vector<CudaCase> cuda_cases();

// Runs one case on random inputs (seeded by `seed`).
CudaCaseResult run_cuda_case(const CudaCase& c, unsigned seed);

}  // namespace reach::tests
