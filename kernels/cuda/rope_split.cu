#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/cuda/rope_split.hpp"

namespace reach::kernels::gpu {
namespace {

__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ void store(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, int64_t i, float v) {
  p[i] = __float2bfloat16(v);
}

// Thread index -> (b, t, part, h, i): i fastest, so a warp covers consecutive pairs of one head.
template <typename T, bool kBackward>
__global__ void rope_split_kernel(const T* in0, const T* in1, const T* in2, const float* cos,
                                  const float* sin, T* out0, T* out1, T* out2, int64_t batch,
                                  int64_t seq_len, int64_t heads, int64_t head_dim,
                                  bool token_major) {
  const int64_t half = head_dim / 2;
  const int64_t total = batch * seq_len * 3 * heads * half;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rest = idx;
    const int64_t i = rest % half;
    rest /= half;
    const int64_t h = rest % heads;
    rest /= heads;
    const int64_t part = rest % 3;
    rest /= 3;
    const int64_t t = rest % seq_len;
    const int64_t b = rest / seq_len;
    const int64_t packed = (((b * seq_len + t) * 3 + part) * heads + h) * head_dim + i;
    const int64_t split = token_major ? ((b * seq_len + t) * heads + h) * head_dim + i
                                      : ((b * heads + h) * seq_len + t) * head_dim + i;
    const float c = cos[t * half + i], s = sin[t * half + i];
    if constexpr (!kBackward) {
      // in0 = qkv; out0..2 = q, k, v.
      const float x1 = load(in0, packed), x2 = load(in0, packed + half);
      T* out = part == 0 ? out0 : part == 1 ? out1 : out2;
      if (part < 2) {
        store(out, split, x1 * c - x2 * s);
        store(out, split + half, x1 * s + x2 * c);
      } else {
        store(out, split, x1);
        store(out, split + half, x2);
      }
    } else {
      // in0..2 = dq, dk, dv; out0 = dqkv.
      const T* in = part == 0 ? in0 : part == 1 ? in1 : in2;
      const float g1 = load(in, split), g2 = load(in, split + half);
      if (part < 2) {
        store(out0, packed, g1 * c + g2 * s);
        store(out0, packed + half, g2 * c - g1 * s);
      } else {
        store(out0, packed, g1);
        store(out0, packed + half, g2);
      }
    }
  }
}

void check_shape(const cpu::RopeSplitShape& s) {
  if (s.batch < 1 || s.seq_len < 1 || s.heads < 1 || s.head_dim < 2 || s.head_dim % 2 != 0) {
    throw std::invalid_argument(
        "rope_split: batch, seq_len and heads must be >= 1 and head_dim even, got B=" +
        std::to_string(s.batch) + " T=" + std::to_string(s.seq_len) +
        " H=" + std::to_string(s.heads) + " hd=" + std::to_string(s.head_dim));
  }
}

template <typename T, bool kBackward>
void launch(const cpu::RopeSplitShape& s, const void* in0, const void* in1, const void* in2,
            const float* cos, const float* sin, void* out0, void* out1, void* out2, void* stream) {
  const int64_t total = s.batch * s.seq_len * 3 * s.heads * (s.head_dim / 2);
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20);
  rope_split_kernel<T, kBackward>
      <<<static_cast<unsigned>(blocks), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
          static_cast<const T*>(in0), static_cast<const T*>(in1), static_cast<const T*>(in2), cos,
          sin, static_cast<T*>(out0), static_cast<T*>(out1), static_cast<T*>(out2), s.batch,
          s.seq_len, s.heads, s.head_dim, s.token_major);
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) {
    throw std::runtime_error(std::string("rope_split: kernel launch failed: ") +
                             cudaGetErrorString(error));
  }
}

}  // namespace

void rope_split_forward_cuda(const cpu::RopeSplitShape& shape, ScalarType type, const void* qkv,
                             const float* cos, const float* sin, void* q, void* k, void* v,
                             void* stream) {
  check_shape(shape);
  if (type == ScalarType::kBFloat16) {
    launch<__nv_bfloat16, false>(shape, qkv, nullptr, nullptr, cos, sin, q, k, v, stream);
  } else {
    launch<float, false>(shape, qkv, nullptr, nullptr, cos, sin, q, k, v, stream);
  }
}

void rope_split_backward_cuda(const cpu::RopeSplitShape& shape, ScalarType type, const void* dq,
                              const void* dk, const void* dv, const float* cos, const float* sin,
                              void* dqkv, void* stream) {
  check_shape(shape);
  if (type == ScalarType::kBFloat16) {
    launch<__nv_bfloat16, true>(shape, dq, dk, dv, cos, sin, dqkv, nullptr, nullptr, stream);
  } else {
    launch<float, true>(shape, dq, dk, dv, cos, sin, dqkv, nullptr, nullptr, stream);
  }
}

}  // namespace reach::kernels::gpu
