// LibTorch binding of alpha-entmax attention (kernels/cpu/entmax_attention.hpp): an
// autograd function and the TORCH_LIBRARY op
//   reach::entmax_attention(Tensor q, Tensor k, Tensor v, int window, Tensor offsets,
//                           Tensor? alpha, Tensor? delta=None, Tensor? beta=None,
//                           Tensor? gamma=None, bool softmax=False, float? scale=None)
// q, k, v: [batch, heads, n, head_dim], float32 or float64, CPU. offsets: 1-D integer
// distances (as floats), strictly increasing, each >= window (window >= n: dense causal).
// alpha: [heads] in (1, 2] (entmax; ignored when softmax). delta, beta, gamma all given
// turn on the log-n scaling c = delta + beta * log(n_visible + 1)^gamma; delta is
// [heads]; beta and gamma are [heads] or [batch, heads, n] (per query). Every one of
// alpha, delta, beta, gamma may require grad. SSMax: softmax=True, delta = 0, gamma = 1.
// alibi: [heads] slopes >= 0 (no grad): the score of a key at distance t gets -slope * t
// added after the log-n multiplier (NAPE: zeros for the NoPE heads).
#pragma once

#include <c10/util/Optional.h>
#include <torch/torch.h>

namespace reach::ops {

torch::Tensor entmax_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, int64_t window, const torch::Tensor& offsets,
                               const c10::optional<torch::Tensor>& alpha,
                               const c10::optional<torch::Tensor>& delta = c10::nullopt,
                               const c10::optional<torch::Tensor>& beta = c10::nullopt,
                               const c10::optional<torch::Tensor>& gamma = c10::nullopt,
                               bool softmax = false, c10::optional<double> scale = c10::nullopt,
                               const c10::optional<torch::Tensor>& alibi = c10::nullopt);

}  // namespace reach::ops
