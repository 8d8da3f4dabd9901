// alpha-entmax attention (seed 003) over the same key sets as dilated attention: the local
// window plus integer offsets (W >= n gives dense causal attention).
//
//   z_j = s_h(n_i) * scale * q_i . k_j      over the visible slots j of query i
//   p   = alpha-entmax(z) = [(alpha - 1) z - tau]_+^(1 / (alpha - 1)),  tau: sum p = 1
//   o_i = sum_j p_j v_j
// s_h(n) = delta_h + beta_h * (log n)^gamma_h is ASEntmax's learned length scaling (n = the
// number of keys query i sees; per head h); pass no scaling for plain alpha-entmax (s = 1).
//
// tau is found by bisection to machine precision (see entmax_attention.cpp for why), p has
// exact zeros outside its support, and the backward is the closed form
// dz = s (g - sum(s g) / sum(s)) with s_j = p_j^(2 - alpha) on the support.
// Work and memory are O(n (W + K) d); nothing n x n is formed.
#pragma once

#include "kernels/dilated_attention_params.hpp"

namespace reach::kernels {

struct EntmaxParams {
  DilatedAttentionParams attention;  // shape, window, integer offsets, scale
  int64_t heads = 1;                 // batch_heads = batch * heads; head h = bh % heads
  double alpha = 1.5;                // in (1, 2]
  // ASEntmax length scaling per head (arrays of `heads` values), or all null for s = 1.
  const double* delta = nullptr;
  const double* beta = nullptr;
  const double* gamma = nullptr;
};

// Empty when valid, else the problem (alpha outside (1, 2], fractional offsets, ...).
std::string validate_entmax_params(const EntmaxParams& params);

// out [BH, n, d]. Throws std::invalid_argument for bad params or non-finite scores.
template <typename T>
void entmax_attention_forward_cpu(const EntmaxParams& params, const T* q, const T* k, const T* v,
                                  T* out);

// Gradients for q, k, v; and, when the scaling arrays are given, d loss / d delta, beta,
// gamma (arrays of `heads`, may be null to skip).
template <typename T>
void entmax_attention_backward_cpu(const EntmaxParams& params, const T* q, const T* k, const T* v,
                                   const T* grad_out, T* grad_q, T* grad_k, T* grad_v,
                                   double* grad_delta, double* grad_beta, double* grad_gamma);

// alpha-entmax of one score vector (exposed for tests): p[i] = [(a-1) z_i - tau]_+^(1/(a-1)).
void entmax_bisect(const double* z, int64_t n, double alpha, double* p);

}  // namespace reach::kernels
