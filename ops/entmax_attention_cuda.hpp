// CUDA side of reach::entmax_attention (ops/entmax_attention.cpp), compiled only against a
// LibTorch with CUDA (ops/entmax_attention_cuda.cpp); the kernels live torch-free in
// kernels/cuda/entmax_attention.*. Internal to ops/.
#pragma once

#include <torch/torch.h>

#include <array>

#include "kernels/cpu/entmax_attention.hpp"

namespace reach::ops::entmax_cuda {

// The parameter tensors as the op holds them (empty = not given).
struct Parameters {
  torch::Tensor alpha, delta, beta, gamma, alibi;
};

// host: params validated on the host (pointers into host copies, offsets included); the
// kernels get device copies of alpha..alibi. Returns {out, saved} (saved: the forward state
// the backward reads; shape_sized_state: of entmax_attention_saved_bytes_for_shape bytes,
// for reach::entmax_attention_forward, else only what these params need).
std::array<torch::Tensor, 2> forward(const torch::Tensor& q, const torch::Tensor& k,
                                     const torch::Tensor& v,
                                     const kernels::EntmaxAttentionParams& host,
                                     const Parameters& parameters, bool shape_sized_state = false);

// Returns {dq, dk, dv, row_grads}; row_grads is [4, batch * heads * n] float64 on q's device
// (d alpha, d c, d beta, d gamma per row) when want_row_grads, else undefined.
std::array<torch::Tensor, 4> backward(const torch::Tensor& q, const torch::Tensor& k,
                                      const torch::Tensor& v, const torch::Tensor& grad_out,
                                      const torch::Tensor& saved,
                                      const kernels::EntmaxAttentionParams& host,
                                      const Parameters& parameters, bool want_row_grads);

}  // namespace reach::ops::entmax_cuda
