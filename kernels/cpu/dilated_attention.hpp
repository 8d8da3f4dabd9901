// Fused causal attention over a local window plus dilated offsets, on the CPU.
//
// Work and memory are O(n * (W + K) * d): per query only its W + K slots are
// scored; nothing n x n is ever formed. Forward saves the per-row log-sum-exp;
// backward recomputes probabilities and runs two passes with no atomics:
// a query-centric pass (dq, and the slot probabilities P and score gradients dS
// kept per row), then a key-centric pass (dk, dv) that gathers, for each key,
// the (query, slot) pairs that saw it. Multi-threaded with OpenMP.
#pragma once

#include "kernels/dilated_attention_params.hpp"

namespace reach::kernels {

// out: [BH, n, d]; lse: [BH, n] (natural-log log-sum-exp of the scaled scores).
// Throws std::invalid_argument when params are invalid.
template <typename T>
void dilated_attention_forward_cpu(const DilatedAttentionParams& params, const T* q, const T* k,
                                   const T* v, T* out, T* lse);

// grad_offsets may be null (static schedules); else it receives K values,
// dLoss/d(offset distance), summed over batch, heads and queries.
template <typename T>
void dilated_attention_backward_cpu(const DilatedAttentionParams& params, const T* q, const T* k,
                                    const T* v, const T* out, const T* lse, const T* grad_out,
                                    T* grad_q, T* grad_k, T* grad_v, double* grad_offsets);

}  // namespace reach::kernels
