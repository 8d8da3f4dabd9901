// alpha-entmax attention over the key set of the dilated operator, on the CPU.
//
// Per query i with visible slots j (window + integer offsets, the slot layout of
// dilated_attention_params.hpp; W >= n gives dense causal attention):
//   z_j = c_i * scale * q_i . k_j - m_h * (i - key_j),
//   c_i = delta_h + beta * (log(n_i + 1))^gamma  (ASEntmax),
//   p_j = [(a_h - 1) z_j - tau]_+^(1/(a_h - 1)),  tau such that sum_j p_j = 1,
//   out_i = sum_j p_j v_j,
// where n_i is the number of visible keys of query i and h the head; beta and gamma are
// per head, or per query (`per_query_scale`, as the authors' "adapt-softplus-tanh" variant
// where they come from projections of the hidden state). log(n_i + 1) follows the
// authors' code (deep-spin/asentmax: log of position + 2, i.e. log(n + 1) for dense causal
// attention), which keeps the log > 0 so any real gamma is allowed. With `log_n_scaling`
// off, c_i = 1. With `softmax` on, p = softmax(z) (alpha is ignored): scalable-softmax
// (SSMax) is softmax with delta = 0, gamma = 1. m_h is the head's ALiBi slope (0 when
// `alibi_slopes` is null; NAPE = NoPE heads with m = 0 and ALiBi heads with m > 0). The
// multiplier c_i scales the content score only, as the authors' code scales the queries
// and adds the ALiBi bias after. See docs/entmax.md.
//
// tau is found by bisection in float64 to machine precision (the interval stops
// shrinking), then p is renormalised. Only scores above max - 1 can be in the support
// (tau >= max - 1), so the bisection runs over those candidates alone: long rows with
// sparse attention cost one pass plus ~60 passes over a handful of candidates. Why bisection: for
// general a there is no closed form for tau even once the support is known (only a = 2 and a = 1.5
// have one); a sort-based method would still need a 1-D root solve per row. Bisection costs ~60
// passes over S = W + K slots, i.e. O(S) per pass, and is exact to rounding.
//
// Work and memory are O(n * (W + K) * d); nothing n x n is formed. Forward is
// parallel over rows; backward recomputes p and is parallel over batch*heads
// (dk, dv of one head are written by one thread: no atomics).
// Fractional offsets are rejected (integer distances only).
#pragma once

#include <string>

#include "kernels/dilated_attention_params.hpp"

namespace reach::kernels {

struct EntmaxAttentionParams {
  DilatedAttentionParams base;           // shapes, window, offsets (integers), scale
  int64_t num_heads = 1;                 // batch_heads % num_heads == 0; head h = bh % num_heads
  const double* alpha = nullptr;         // [num_heads], each in (1, 2]; unused when softmax
  bool softmax = false;                  // normalise by softmax instead of entmax
  bool log_n_scaling = false;            // multiply scores by c_i (see above)
  bool per_query_scale = false;          // beta, gamma are [batch_heads * n] instead of [num_heads]
  const double* delta = nullptr;         // [num_heads], used when log_n_scaling
  const double* beta = nullptr;          // [num_heads] or [batch_heads * n]
  const double* gamma = nullptr;         // [num_heads] or [batch_heads * n]
  const double* alibi_slopes = nullptr;  // [num_heads], each >= 0; null: no distance bias
};

// Empty when valid, else a one-line message naming the problem. With values_on_device, a null
// alpha / delta / beta / gamma pointer means "the values live on a GPU" (the CUDA op does not
// read them back, which would wait for the GPU): their values are then not checked here (the
// CUDA op turns invalid ones into NaN on the device instead).
std::string validate_entmax_params(const EntmaxAttentionParams& params,
                                   bool values_on_device = false);

// out: [BH, n, d]. Throws std::invalid_argument on invalid params or NaN/inf inputs.
template <typename T>
void entmax_attention_forward_cpu(const EntmaxAttentionParams& params, const T* q, const T* k,
                                  const T* v, T* out);

// Gradients of a scalar loss L given grad_out = dL/dout. grad_alpha, grad_delta,
// grad_beta, grad_gamma (float64, overwritten; shaped like alpha, delta, beta, gamma) may
// each be null.
template <typename T>
void entmax_attention_backward_cpu(const EntmaxAttentionParams& params, const T* q, const T* k,
                                   const T* v, const T* grad_out, T* grad_q, T* grad_k, T* grad_v,
                                   double* grad_alpha, double* grad_delta, double* grad_beta,
                                   double* grad_gamma);

// Normalises one row in place: x[0..S) scores (-inf = invisible) -> probabilities.
// Exposed for tests. alpha in (1, 2].
void entmax_normalise_row(double* x, int64_t size, double alpha);

}  // namespace reach::kernels
