// The RoPE split on a CUDA GPU (float64 reference: kernels/cpu/reference_rope_split.hpp): one
// pass from the qkv projection's output [B, T, 3, H, hd] to q, k, v in the attention layout
// [B, H, T, hd] (or [B, T, H, hd] with shape.token_major), q and k rotated, in place of the permute
// / chunk / multiply / cat / contiguous chain of tensor ops (issue 15: ~25 ms of a 127 ms training
// step). One thread per (row, part, pair i < hd / 2), consecutive threads on consecutive i: both
// the reads of qkv and the writes of q, k, v are coalesced. Arithmetic in float32, one rounding to
// the output type. Raw device pointers, no torch and no CUDA headers here.
#pragma once

#include <cstdint>

#include "kernels/cpu/reference_rope_split.hpp"  // RopeSplitShape
#include "kernels/cuda/dilated_attention.hpp"    // ScalarType

namespace reach::kernels::gpu {

// qkv, q, k, v of `type`; cos, sin float32 [T, hd / 2]. stream: a cudaStream_t (nullptr: the
// default stream). Throws std::invalid_argument on a bad shape, std::runtime_error on a CUDA
// error.
void rope_split_forward_cuda(const cpu::RopeSplitShape& shape, ScalarType type, const void* qkv,
                             const float* cos, const float* sin, void* q, void* k, void* v,
                             void* stream);

// dq, dk, dv (the layout of the forward's outputs) -> dqkv [B, T, 3, H, hd] (every element
// written).
void rope_split_backward_cuda(const cpu::RopeSplitShape& shape, ScalarType type, const void* dq,
                              const void* dk, const void* dv, const float* cos, const float* sin,
                              void* dqkv, void* stream);

}  // namespace reach::kernels::gpu
