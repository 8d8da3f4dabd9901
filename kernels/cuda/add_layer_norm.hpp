// Fused residual add + LayerNorm or RMSNorm on a CUDA GPU (float64 reference:
// kernels/cpu/reference_add_layer_norm.hpp). Forward: h = x + r (float32 residual stream x,
// r float32 or bf16 or none), y = layer_norm(h) or rms_norm(h) (NormKind: one kernel, the
// RMS variant chosen at compile time) written straight in the matrix products' type
// (bf16 under autocast), and the row's mean and rstd; one pass where the unfused step runs a
// mixed-type add, an fp32 LayerNorm and a cast. Backward: dx = dr = LayerNorm's input gradient
// + the gradient already flowing into h, written as float32 (dx) and in r's type (dr), and
// per-block partial sums of dgamma and dbeta (the caller sums the [blocks, D] partials): the
// unfused step's weight-gradient kernel alone took 274 us per LayerNorm at 65,536 x 512.
// RMSNorm (y = h * rstd * gamma, rstd = 1 / sqrt(mean(h^2) + eps)) has no mean, beta or dbeta:
// those pointers are not read or written (nullptr allowed).
// One warp per row, float32 arithmetic, dim <= kMaxLayerNormDim. Fast path (dim a multiple of
// 128, float32 pointers 16-byte and bf16 ones 8-byte aligned; chosen at launch): the row is read
// from global memory once into registers (dim / 32 values a lane, in 16-byte float32 / 8-byte
// bf16 vector loads, coalesced), the mean and the centred variance come from the registers and
// the outputs are written once, so the kernels only stream their bytes; the backward's warps
// take rows grid-stride and keep their dgamma/dbeta sums in registers until one shared-memory
// reduction per block. Otherwise the generic kernels: scalar loads, a row read again in each
// pass (the re-reads hit L1/L2), the backward's per-warp partials in shared memory. Raw device
// pointers, no torch, no CUDA headers.
#pragma once

#include <cstdint>

#include "kernels/cuda/dilated_attention.hpp"  // ScalarType

namespace reach::kernels::gpu {

inline constexpr int64_t kMaxLayerNormDim = 768;

enum class NormKind { kLayerNorm, kRmsNorm };

struct AddLayerNormArgs {
  int64_t rows = 0, dim = 0;
  double eps = 1e-5;
  ScalarType r_type = ScalarType::kFloat32;  // of r and dr
  ScalarType y_type = ScalarType::kFloat32;  // of y and dy
  NormKind kind = NormKind::kLayerNorm;
};

// Blocks the backward launches for these args (the rows of its partial sums). For the fast
// path's dims the count is what the current device holds at once (its SM count), so ask on the
// device the backward will run on.
int64_t add_layer_norm_backward_blocks(const AddLayerNormArgs& args);

// x [rows, dim] float32, r (nullptr: none) of r_type, gamma, beta float32 [dim]. Writes h
// (nullptr allowed only when r is nullptr: h would equal x), y of y_type, mean and rstd [rows]
// (RMSNorm: beta and mean unused).
void add_layer_norm_forward_cuda(const AddLayerNormArgs& args, const float* x, const void* r,
                                 const float* gamma, const float* beta, float* h, void* y,
                                 float* mean, float* rstd, void* stream);

// dy of y_type, dh float32 (nullptr: none), h (x when there was no r), mean, rstd as the
// forward wrote them. Writes dx float32 (nullptr: skip), dr of r_type (nullptr: skip) and the
// partial sums dgamma_partial, dbeta_partial [add_layer_norm_backward_blocks(args), dim]
// (RMSNorm: mean and dbeta_partial unused).
void add_layer_norm_backward_cuda(const AddLayerNormArgs& args, const void* dy, const float* dh,
                                  const float* h, const float* mean, const float* rstd,
                                  const float* gamma, float* dx, void* dr, float* dgamma_partial,
                                  float* dbeta_partial, void* stream);

}  // namespace reach::kernels::gpu
