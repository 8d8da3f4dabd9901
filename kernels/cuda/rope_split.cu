#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
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

// 16 bytes of T: 8 bf16 or 4 float, moved with one 128-bit load or store.
template <typename T>
struct alignas(16) Vec16 {
  static constexpr int kSize = 16 / static_cast<int>(sizeof(T));
  T v[kSize];
};

// The vectorised form (issue 15: the scalar kernel above ran ~6x under the H200's bandwidth,
// 7.9 ms forward + 7.8 ms backward per step of the paper preset): one thread per (row, part, h,
// 16-byte group of pairs), x1 and x2 each read with one 128-bit load, cos/sin with float4 loads,
// and its index arithmetic in Index: int32_t (32-bit divisions, a few instructions each, where
// a 64-bit one is a subroutine of dozens) whenever every element offset fits, int64_t otherwise.
// Needs half % kSize == 0 and 16-byte aligned pointers (launch() checks; otherwise the scalar
// kernel runs). Same arithmetic, same rounding.
template <typename T, bool kBackward, typename Index>
__global__ void rope_split_vec_kernel(const T* in0, const T* in1, const T* in2, const float* cos,
                                      const float* sin, T* out0, T* out1, T* out2, Index rows,
                                      Index seq_len, int heads, int head_dim, bool token_major) {
  using V = Vec16<T>;
  constexpr int kSize = V::kSize;
  const int half = head_dim / 2;
  const int groups = half / kSize;
  const int per_row = 3 * heads * groups;
  const Index total = rows * per_row;
  for (Index idx = static_cast<Index>(blockIdx.x) * static_cast<Index>(blockDim.x) +
                   static_cast<Index>(threadIdx.x);
       idx < total; idx += static_cast<Index>(gridDim.x) * static_cast<Index>(blockDim.x)) {
    const Index row = idx / per_row;  // b * seq_len + t
    int rest = static_cast<int>(idx - row * per_row);
    const int g = rest % groups;
    rest /= groups;
    const int h = rest % heads;
    const int part = rest / heads;
    const Index t = row % seq_len;
    const Index b = row / seq_len;
    const int i = g * kSize;
    const Index packed = ((row * 3 + part) * heads + h) * head_dim + i;
    const Index split = token_major ? (row * heads + h) * head_dim + i
                                    : ((b * heads + h) * seq_len + t) * head_dim + i;
    float c[kSize], s[kSize];
    if (part < 2) {
      const float4* cos4 = reinterpret_cast<const float4*>(cos + t * half + i);
      const float4* sin4 = reinterpret_cast<const float4*>(sin + t * half + i);
#pragma unroll
      for (int j = 0; j < kSize / 4; ++j) {
        const float4 cj = cos4[j], sj = sin4[j];
        c[4 * j] = cj.x, c[4 * j + 1] = cj.y, c[4 * j + 2] = cj.z, c[4 * j + 3] = cj.w;
        s[4 * j] = sj.x, s[4 * j + 1] = sj.y, s[4 * j + 2] = sj.z, s[4 * j + 3] = sj.w;
      }
    }
    const T* in = kBackward ? (part == 0 ? in0 : part == 1 ? in1 : in2) : in0;
    T* out = kBackward ? out0 : (part == 0 ? out0 : part == 1 ? out1 : out2);
    const int64_t from = kBackward ? split : packed;
    const int64_t to = kBackward ? packed : split;
    const V a = *reinterpret_cast<const V*>(in + from);
    const V z = *reinterpret_cast<const V*>(in + from + half);
    V ra, rz;
#pragma unroll
    for (int j = 0; j < kSize; ++j) {
      const float x1 = load(a.v, j), x2 = load(z.v, j);
      float y1 = x1, y2 = x2;
      if (part < 2) {
        if constexpr (!kBackward) {
          y1 = x1 * c[j] - x2 * s[j];
          y2 = x1 * s[j] + x2 * c[j];
        } else {
          y1 = x1 * c[j] + x2 * s[j];
          y2 = x2 * c[j] - x1 * s[j];
        }
      }
      store(ra.v, j, y1);
      store(rz.v, j, y2);
    }
    *reinterpret_cast<V*>(out + to) = ra;
    *reinterpret_cast<V*>(out + to + half) = rz;
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

void check_shape(const cpu::RopeSplitShape& s) {
  if (s.batch < 1 || s.seq_len < 1 || s.heads < 1 || s.head_dim < 2 || s.head_dim % 2 != 0) {
    throw std::invalid_argument(
        "rope_split: batch, seq_len and heads must be >= 1 and head_dim even, got B=" +
        std::to_string(s.batch) + " T=" + std::to_string(s.seq_len) +
        " H=" + std::to_string(s.heads) + " hd=" + std::to_string(s.head_dim));
  }
}

template <typename T, bool kBackward>
void launch_scalar(const cpu::RopeSplitShape& s, const void* in0, const void* in1, const void* in2,
                   const float* cos, const float* sin, void* out0, void* out1, void* out2,
                   void* stream);

template <typename T, bool kBackward>
void launch(const cpu::RopeSplitShape& s, const void* in0, const void* in1, const void* in2,
            const float* cos, const float* sin, void* out0, void* out1, void* out2, void* stream) {
  constexpr int kThreads = 256;
  constexpr int kSize = Vec16<T>::kSize;
  const int64_t half = s.head_dim / 2;
  const bool vectorised = half % kSize == 0 && s.heads * s.head_dim * 3 < (int64_t{1} << 30) &&
                          aligned16(in0) && (in1 == nullptr || aligned16(in1)) &&
                          (in2 == nullptr || aligned16(in2)) && aligned16(out0) &&
                          (out1 == nullptr || aligned16(out1)) &&
                          (out2 == nullptr || aligned16(out2)) && aligned16(cos) && aligned16(sin);
  if (vectorised) {
    const int64_t total = s.batch * s.seq_len * 3 * s.heads * (half / kSize);
    const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20);
    // 32-bit indices when the largest element offset (and the grid stride past it) fits.
    const int64_t elements = s.batch * s.seq_len * 3 * s.heads * s.head_dim;
    const auto run = [&](auto index) {
      using Index = decltype(index);
      rope_split_vec_kernel<T, kBackward, Index>
          <<<static_cast<unsigned>(blocks), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
              static_cast<const T*>(in0), static_cast<const T*>(in1), static_cast<const T*>(in2),
              cos, sin, static_cast<T*>(out0), static_cast<T*>(out1), static_cast<T*>(out2),
              static_cast<Index>(s.batch * s.seq_len), static_cast<Index>(s.seq_len),
              static_cast<int>(s.heads), static_cast<int>(s.head_dim), s.token_major);
    };
    if (elements + blocks * kThreads < (int64_t{1} << 31)) {
      run(int32_t{0});
    } else {
      run(int64_t{0});
    }
  } else {
    launch_scalar<T, kBackward>(s, in0, in1, in2, cos, sin, out0, out1, out2, stream);
  }
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) {
    throw std::runtime_error(std::string("rope_split: kernel launch failed: ") +
                             cudaGetErrorString(error));
  }
}

template <typename T, bool kBackward>
void launch_scalar(const cpu::RopeSplitShape& s, const void* in0, const void* in1, const void* in2,
                   const float* cos, const float* sin, void* out0, void* out1, void* out2,
                   void* stream) {
  const int64_t total = s.batch * s.seq_len * 3 * s.heads * (s.head_dim / 2);
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20);
  rope_split_kernel<T, kBackward>
      <<<static_cast<unsigned>(blocks), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
          static_cast<const T*>(in0), static_cast<const T*>(in1), static_cast<const T*>(in2), cos,
          sin, static_cast<T*>(out0), static_cast<T*>(out1), static_cast<T*>(out2), s.batch,
          s.seq_len, s.heads, s.head_dim, s.token_major);
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
