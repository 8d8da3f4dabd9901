// Fused SwiGLU activation on a CUDA GPU (float64 reference: kernels/cpu/reference_swiglu.hpp):
// y = silu(a) * b forward, and da, db from dy backward, each one pass over the elements, where
// the unfused step runs silu and a multiply forward and silu's backward and two multiplies
// backward (each a read and a write of the [tokens, hidden] tensors). a, b, y, dy, da and db
// share one type (bf16 under autocast, or float32); the arithmetic is float32, rounded once.
// 16-byte loads and stores (8 bf16 or 4 float32 elements) when every pointer is 16-byte
// aligned, the last count % 8 (or % 4) elements one by one; element by element otherwise.
// Raw device pointers, no torch, no CUDA headers.
#pragma once

#include <cstdint>

#include "kernels/cuda/dilated_attention.hpp"  // ScalarType

namespace reach::kernels::gpu {

// a, b, y: count elements of `type` (count >= 0).
void swiglu_forward_cuda(int64_t count, ScalarType type, const void* a, const void* b, void* y,
                         void* stream);

// dy, a, b -> da, db: count elements of `type`.
void swiglu_backward_cuda(int64_t count, ScalarType type, const void* dy, const void* a,
                          const void* b, void* da, void* db, void* stream);

}  // namespace reach::kernels::gpu
