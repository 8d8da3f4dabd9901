// alpha-entmax / ASEntmax / SSMax attention on a CUDA GPU: the definition of
// kernels/cpu/entmax_attention.hpp (docs/entmax.md), raw device pointers, no torch and no CUDA
// headers here so C++ callers and tests can include it.
//
// Two paths behind one interface, picked by the key set:
//  * tiled (no offsets: dense causal, W >= n, or a plain window): blocks of 64 queries stream
//    64-key tiles through shared memory, never forming an n x n matrix. The threshold needs a
//    whole row, so the forward makes several passes over the key tiles of its query block: the
//    row maximum, one 8-point bisection pass over the bracket [max x - 1, max x - n^-(a-1)],
//    then Halley (a <= 1.5) or Newton (a > 1.5) steps safeguarded by the bracket, with f and its
//    derivatives summed in float64, until |f(tau) - 1| < 1e-6 for every row of the block
//    (at most kMaxSolvePasses). A key tile in which no row of the block has a score above its
//    current lower bound on tau holds no support and is skipped by every later pass and by the
//    backward (a bit per query block x key tile, saved by the forward). Backward: a
//    query-centric pass (dq and the row sums behind dz, d alpha and d c) and a key-centric pass
//    (dk, dv); no atomics.
//  * tensor cores (a fast form of the tiled path: bf16, dense causal (no offsets, W >= n),
//    head_dim 64 or 128, entmax with alpha in (1, 2] per head; ASEntmax per head or per query
//    and ALiBi / NAPE slopes included). Softmax and SSMax, float32, windows W < n and other
//    head_dims take the CUDA-core tiled path. 128 threads per block of 64 queries (4 warps x 16
//    rows); the scores of every pass are mma.sync m16n8k16 bf16 products with fp32
//    accumulation, K/V tiles double-buffered by cp.async, per-row solve state in registers.
//    Same passes as the tiled path (max, 8-point bracket, safeguarded Halley / Newton; f, f',
//    f'' summed in float per tile, float64 across tiles; a row stops at |f - 1| < 1e-6 or
//    when the step no longer changes float(tau)), then P V on the tensor cores. Backward: a
//    query kernel with two sweeps (the row sums -> mean_g = sum(s g) / sum(s), d alpha, d c;
//    then dz = s (g - mean_g) in fp32 and dq = c scale dz K) and a key kernel (dv = P^T dO,
//    dk = (c scale dz)^T Q), no atomics; P and dz enter the mmas as bf16 hi + lo pairs. The
//    saved state is the tiled path's, same layout.
//  * rows (window + offsets, S = min(W, n) + K <= kMaxRowSlots): a warp per query keeps the
//    row's S scores in shared memory and finds tau by float64 bisection to machine precision,
//    as the CPU kernel does. Backward: the warp per query writes dq, the row sums and, per slot,
//    p and dz to a workspace; a warp per key gathers dk and dv from the (query, slot) pairs that
//    saw it (no atomics).
// Scores and matrix products accumulate in float32 from float32 or bf16 inputs; the log-n
// multiplier, the threshold solve, the row sums of the parameter gradients and their
// reductions use float64.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/cpu/entmax_attention.hpp"
#include "kernels/cuda/dilated_attention.hpp"  // ScalarType

namespace reach::kernels::gpu {

inline constexpr int64_t kEntmaxMaxHeadDim = 128;
inline constexpr int64_t kMaxRowSlots = 1024;
inline constexpr int64_t kMaxEntmaxOffsets = 64;
inline constexpr int64_t kMaxTiledLength = int64_t{1} << 21;
inline constexpr int kMaxSolvePasses = 24;

// The CUDA form of the parameters: the same struct as the CPU kernel's, but alpha, delta,
// beta, gamma and alibi_slopes point to device float64 arrays (base.offsets stays on the
// host: offsets travel by value). Validate with the host copies first
// (validate_entmax_params); this function checks only what the CUDA kernels add.
// Empty when supported (head_dim <= 128, K <= 64, S <= kMaxRowSlots when K > 0,
// n <= kMaxTiledLength), else a message naming the problem.
std::string entmax_cuda_support_problem(const EntmaxAttentionParams& params);

// True when params take the tiled path (no offsets visible), false for the row path.
bool entmax_uses_tiles(const EntmaxAttentionParams& params);

// Bytes of saved state the forward writes and the backward reads (row statistics and the
// key-tile mask), 16-byte aligned.
size_t entmax_attention_saved_bytes(const EntmaxAttentionParams& params);
// The saved-state bytes for these shapes whatever the path and offsets: the tiled path's
// (the most entmax_attention_saved_bytes gives), 16-byte aligned:
// align16(batch_heads * seq_len * 16 + batch_heads * T * ceil(T / 32) * 4),
// T = ceil(seq_len / entmax_attention_tile()). A state of a size known from the shapes alone
// lets torch.compile trace the forward op (python/reach computes the same number).
size_t entmax_attention_saved_bytes_for_shape(int64_t batch_heads, int64_t seq_len);
int entmax_attention_tile();
// Bytes of scratch the backward needs.
size_t entmax_attention_backward_workspace_bytes(const EntmaxAttentionParams& params);

// q, k, v, out: [BH, n, d] of `type`; saved: entmax_attention_saved_bytes device bytes.
// stream: a cudaStream_t (nullptr: the default stream). Throws std::invalid_argument on
// unsupported params and std::runtime_error on a CUDA error.
void entmax_attention_forward_cuda(const EntmaxAttentionParams& params, ScalarType type,
                                   const void* q, const void* k, const void* v, void* out,
                                   void* saved, void* stream);

// Gradients of a scalar loss given grad_out. row_grads: null, or 4 * BH * n device doubles
// overwritten with, per row (b, h, i): dL/dalpha, dL/dc (= the row's share of dL/ddelta),
// dL/dbeta and dL/dgamma (the caller sums them per head, or keeps them per query).
void entmax_attention_backward_cuda(const EntmaxAttentionParams& params, ScalarType type,
                                    const void* q, const void* k, const void* v,
                                    const void* grad_out, const void* saved, void* grad_q,
                                    void* grad_k, void* grad_v, double* row_grads, void* workspace,
                                    void* stream);

}  // namespace reach::kernels::gpu
