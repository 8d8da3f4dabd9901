// LibTorch binding of dilated attention: an autograd function and TORCH_LIBRARY ops.
//
// Ops (load from Python with torch.ops.load_library("libreach_ops.so")):
//   reach::dilated_attention(Tensor q, Tensor k, Tensor v, int window, Tensor offsets,
//                            float? scale=None) -> Tensor      (autograd-aware)
//   reach::dilated_attention_forward(..., bool token_major_out=False)  -> (Tensor out, Tensor lse)
//     (token_major_out: out is a [B, H, n, d] view of a [B, n, H, d] tensor)
//   reach::dilated_attention_backward(...) -> (Tensor dq, Tensor dk, Tensor dv, Tensor doffsets)
//     (doffsets on q's device)
// q: [batch, heads, n, head_dim]; k, v: [batch, kv_heads, n, head_dim] with kv_heads dividing
// heads (grouped-query attention: query head h reads K/V head h / (heads / kv_heads), and no
// K/V is copied per query head); float32 or float64 (bfloat16 on CUDA), same device.
// offsets: 1-D float64 real distances (strictly increasing, each >= window); it may
// require grad (the learned schedule), in which case d loss / d offsets is returned.
#pragma once

#include <c10/util/Optional.h>
#include <torch/torch.h>

#include "pattern/dilated_offsets.hpp"

namespace reach::ops {

// token_major_out: the output as a [B, H, n, d] view of a token-major [B, n, H, d] tensor (the
// output projection reads it without a permute; the CUDA tensor-core kernels write it in place,
// and read its gradient in place when that is token-major too). Same values either way.
torch::Tensor dilated_attention(const torch::Tensor& q, const torch::Tensor& k,
                                const torch::Tensor& v, int64_t window,
                                const torch::Tensor& offsets,
                                c10::optional<double> scale = c10::nullopt,
                                bool token_major_out = false);

// Static schedules: integer offsets from (base, alpha, window, reach) per docs/definitions.md.
torch::Tensor dilated_attention_static(const torch::Tensor& q, const torch::Tensor& k,
                                       const torch::Tensor& v, const pattern::DilationSpec& spec);

// Learned schedule: alpha is a 0-dim tensor (> 0) that receives a gradient through
// the interpolated offsets alpha * b, b in the base sequence, W <= alpha * b <= R.
// alpha_value: alpha's value when the caller already has it on the host (it must equal
// alpha); without it alpha is read back, which for a GPU tensor waits for the GPU. Either
// way nothing else is read back: the offsets go to the op from the host and d alpha is
// formed on the device.
torch::Tensor dilated_attention_learned(const torch::Tensor& q, const torch::Tensor& k,
                                        const torch::Tensor& v, const torch::Tensor& alpha,
                                        pattern::OffsetBase base, int64_t window, int64_t reach,
                                        c10::optional<double> alpha_value = c10::nullopt);

// The CPU implementations behind reach::dilated_attention_forward / _backward.
std::tuple<torch::Tensor, torch::Tensor> forward_cpu(const torch::Tensor& q, const torch::Tensor& k,
                                                     const torch::Tensor& v, int64_t window,
                                                     const torch::Tensor& offsets,
                                                     c10::optional<double> scale,
                                                     bool token_major_out = false);
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor> backward_cpu(
    const torch::Tensor& grad_out, const torch::Tensor& q, const torch::Tensor& k,
    const torch::Tensor& v, const torch::Tensor& out, const torch::Tensor& lse, int64_t window,
    const torch::Tensor& offsets, c10::optional<double> scale, bool need_offsets_grad);

// The token-major layout: a [B, H, n, d] view of a contiguous [B, n, H, d] tensor.
bool is_token_major(const torch::Tensor& t);
torch::Tensor token_major_copy(const torch::Tensor& t);

// Dense exact causal attention, matmul + mask + softmax: the LibTorch baseline.
torch::Tensor dense_causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                                     const torch::Tensor& v,
                                     c10::optional<double> scale = c10::nullopt);

}  // namespace reach::ops
