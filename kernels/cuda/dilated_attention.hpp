// Fused causal attention over a local window plus dilated offsets, on a CUDA GPU.
//
// Same contract as the CPU kernel (kernels/dilated_attention_params.hpp); raw
// device pointers, no torch and no CUDA headers here so C++ callers and tests can
// include it. A block owns a tile of consecutive queries, so at every offset slot
// the block reads consecutive key rows (coalesced). Window and offset scores share
// one online softmax; the forward saves the log-sum-exp (float32, natural log).
// Backward without atomics: a query-centric pass (dq) then a key-centric pass
// (dk, dv) that gathers, for each key, the (query, slot) pairs that saw it.
//
// Two implementations behind one interface:
//  * tensor cores (kernels/cuda/dilated_attention_tc.cuh): bf16, head_dim 64 or 128,
//    forward for any offsets (a fractional one reads two rows); backward for any offsets
//    and the offset gradient at head_dim 64, for integer offsets without it at 128. The
//    window band runs as dense 64-row blocks on mma.sync, the offsets as 16-byte row
//    loads; the backward recomputes P from the log-sum-exp and keeps only P and dS of
//    the offset slots in the workspace.
//  * CUDA cores (everything else: fp32; at head_dim 128 the backward of fractional
//    offsets or with the offset gradient): a group of D/16 threads per query; the
//    backward stores P and dS for every slot. Both backwards start from the same
//    log-sum-exp, so either pairs with either forward.
#pragma once

#include <cstddef>
#include <string>

#include "kernels/dilated_attention_params.hpp"

namespace reach::kernels::gpu {

enum class ScalarType { kFloat32, kBFloat16 };

// Most offsets the kernels take (they travel in the launch parameters).
inline constexpr int64_t kMaxOffsets = 64;

// Empty when the CUDA kernels support params (head_dim 64 or 128, K <= kMaxOffsets,
// n < 2^31), else a message naming the problem.
std::string cuda_support_problem(const DilatedAttentionParams& params);

// q, out: [BH, n, d] of `type`; k, v: [BH / kv_group, n, d] (grouped-query attention reads
// each K/V head in place for its kv_group query heads); lse: [BH, n] float32. stream: a
// cudaStream_t (nullptr: the default stream). Throws std::invalid_argument on bad params and
// std::runtime_error on a CUDA error.
void dilated_attention_forward_cuda(const DilatedAttentionParams& params, ScalarType type,
                                    const void* q, const void* k, const void* v, void* out,
                                    float* lse, void* stream);

// True when the backward with these arguments (offsets_grad: asked for the offset
// gradient) takes the tensor-core path; the forward then takes it too (it also does for
// fractional offsets: every bf16 head_dim 64/128 forward runs on the tensor cores).
bool dilated_attention_uses_tensor_cores(const DilatedAttentionParams& params, ScalarType type,
                                         bool offsets_grad);

// Device bytes the backward needs as scratch for this type and offsets_grad
// (grad_offsets != nullptr); the one-argument form is enough for any of them.
size_t dilated_attention_backward_workspace_bytes(const DilatedAttentionParams& params,
                                                  ScalarType type, bool offsets_grad);
size_t dilated_attention_backward_workspace_bytes(const DilatedAttentionParams& params);

// grad_k, grad_v: [BH, n, d], one per QUERY head: with kv_group > 1 the caller sums each group of
// kv_group consecutive heads into its K/V head's gradient.
// grad_offsets: null, or K doubles on the device (dLoss/d offset distance, summed
// over batch, heads and queries). workspace: at least
// dilated_attention_backward_workspace_bytes(params, type, grad_offsets != nullptr)
// device bytes, 16-byte aligned.
void dilated_attention_backward_cuda(const DilatedAttentionParams& params, ScalarType type,
                                     const void* q, const void* k, const void* v, const void* out,
                                     const float* lse, const void* grad_out, void* grad_q,
                                     void* grad_k, void* grad_v, double* grad_offsets,
                                     void* workspace, void* stream);

}  // namespace reach::kernels::gpu
