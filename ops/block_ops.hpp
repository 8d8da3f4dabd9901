// Fused CUDA ops for a transformer block's element-wise work (issue 15), with autograd:
//  * rope_split: the qkv projection's output [B, T, 3 * H * hd] -> q, k, v [B, H, T, hd]
//    contiguous, RoPE applied to q and k (kernels/cuda/rope_split.hpp);
//  * merge_heads: the attention output [B, H, T, hd] -> [B, T, H * hd];
//  * add_layer_norm, add_rms_norm: h = x + r and y = layer_norm(h) or rms_norm(h) (r undefined:
//    h is x itself), y in the autocast dtype when CUDA autocast is on, else in x's
//    (kernels/cuda/add_layer_norm.hpp);
//  * swiglu: the SwiGLU MLP's activation silu(a) * b (kernels/cuda/swiglu.hpp);
//  * bias_gelu: the GELU MLP's fc bias add and activation gelu(h0 + bias), whose backward also
//    sums the bias gradient (kernels/cuda/bias_gelu.hpp).
// The model uses them on CUDA tensors only, when switched on (model/gpt.cpp,
// model/attention/attention_layer.cpp); on the CPU it keeps the tensor-op path, so what reach
// computes there does not change.
#pragma once

#include <torch/torch.h>

#include <array>
#include <utility>

namespace reach::ops {

// Whether this build has the CUDA kernels (a LibTorch with CUDA).
bool fused_block_kernels_built();
// Whether the model uses them on CUDA tensors: built, and not switched off (REACH_FUSED_KERNELS=0
// or set_fused_block_kernels(false) keep the tensor-op path). On by default since the fused path
// passed `ctest -L gpu` (all GPU cases, with it on) and the 200-step loss-curve check on an H200
// (docs/benchmarks.md, "fused block kernels").
bool fused_block_kernels_enabled();
void set_fused_block_kernels(bool enabled);

// Whether the fused norms (add_layer_norm, add_rms_norm) take these tensors (CUDA, float32
// residual stream, a supported size).
bool add_layer_norm_supports(const torch::Tensor& x, int64_t dim);

// qkv [B, T, 3 * heads * hd] (float32 or bf16, CUDA), cos and sin float32 [T, hd / 2].
// Returns q, k, v of shape [B, H, T, hd]: contiguous, or with token_major transposed views of
// [B, T, H, hd] tensors (for scaled_dot_product_attention, which reads and writes that layout).
// Throws std::invalid_argument naming the problem for anything else.
std::array<torch::Tensor, 3> rope_split(const torch::Tensor& qkv, int64_t heads,
                                        const torch::Tensor& cos, const torch::Tensor& sin,
                                        bool token_major = false);

// y [B, H, T, hd] (CUDA, hd x element size a multiple of 16 bytes) -> [B, T, H * hd]: the
// attention output in the output projection's layout (kernels/cuda/head_layout.hpp).
torch::Tensor merge_heads(const torch::Tensor& y);

// x float32 [..., D] (CUDA), r undefined or float32 / bf16 of x's shape, gamma and beta
// float32 [D]. Returns {h, y}; h is x when r is undefined.
std::pair<torch::Tensor, torch::Tensor> add_layer_norm(const torch::Tensor& x,
                                                       const torch::Tensor& r,
                                                       const torch::Tensor& gamma,
                                                       const torch::Tensor& beta, double eps);

// The same for RMSNorm: y = h / sqrt(mean(h^2) + eps) * weight (model::RmsNormImpl), weight
// float32 [D]. Returns {h, y}; h is x when r is undefined.
std::pair<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x, const torch::Tensor& r,
                                                     const torch::Tensor& weight, double eps);

// Whether the model runs swiglu on these tensors: the fused kernels on, CUDA, one shape and
// type, float32 or bf16.
bool swiglu_supports(const torch::Tensor& a, const torch::Tensor& b);

// a, b of one shape and type (float32 or bf16, CUDA): y = silu(a) * b, in that type.
torch::Tensor swiglu(const torch::Tensor& a, const torch::Tensor& b);

// Whether the model runs bias_gelu on these tensors: the fused kernels on, CUDA, h0 a non-empty
// contiguous 2-D float32 or bf16 tensor of at most kernels::gpu::kMaxBiasGeluCols columns, bias
// contiguous float32 [h0.size(1)] on h0's device.
bool bias_gelu_supports(const torch::Tensor& h0, const torch::Tensor& bias);

// h0 [rows, cols] (float32 or bf16, CUDA: the fc layer's x W^T without its bias), bias float32
// [cols]: y = gelu(h0 + bias) (the exact, erf GELU), in h0's type. The backward gives dh in h0's
// type and dbias float32, summed from the float32 values of dh before rounding, in the kernel
// that computes dh (no second pass over it).
torch::Tensor bias_gelu(const torch::Tensor& h0, const torch::Tensor& bias);

// Whether the model runs linear_bias for a linear layer (weight, bias) on x: the fused kernels
// on, CUDA, x a 2-D matrix of rows, a bias, under bf16 autocast (the type the layer computes in).
bool linear_bias_supports(const torch::Tensor& x, const torch::Tensor& weight,
                          const torch::Tensor& bias);

// x [rows, in], weight [out, in], bias [out] (CUDA): y = x W^T + b computed in bf16 as bf16
// autocast computes it (addmm, the bias in the product's epilogue), y bf16. The backward is
// AddmmBackward0's matrix products, with the bias gradient summed by reach's column-sum kernels
// (float32 partials, float64 total) instead of torch's sum(0) over the bf16 gradient: 1.00 ->
// 0.49 ms for the 16 calls of a paper-preset step at [65,536, 512] on the H200.
torch::Tensor linear_bias(const torch::Tensor& x, const torch::Tensor& weight,
                          const torch::Tensor& bias);

}  // namespace reach::ops
