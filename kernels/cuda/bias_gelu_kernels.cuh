// The bias + GELU kernels (kernels/cuda/bias_gelu.hpp), templated on how they are tuned
// (`GeluTuning`), so that the launcher (bias_gelu.cu) and the variant benchmark
// (bench/cuda/bias_gelu_variants.cu) compile the same code. Included by those two only.
//
// A block is kColThreads x kLanes threads: kColThreads threads side by side along a row (a warp,
// reading one contiguous stretch of it), kLanes rows at a time. blockIdx.y is the column tile
// (kColThreads x kPer columns: 256 for the fast kernels, 32 for the generic ones), blockIdx.x the
// row group; each thread keeps its tile's bias values and (backward) its columns' sums in
// registers while it strides over the rows.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace reach::kernels::gpu::bias_gelu_detail {

constexpr int kColThreads = 32;
constexpr int kLanes = 8;
constexpr int kThreads = kColThreads * kLanes;
constexpr int kFastCols = 8;  // columns a thread of the fast kernels takes: 16 bytes of bf16

// How a kernel is tuned (tunings with the same fast_erf compute the same outputs; the bias sums'
// order follows the grid, which follows the blocks an SM holds):
//  * rows: rows a thread loads before computing any (the loads in flight, for the memory system);
//  * min_blocks: __launch_bounds__'s minimum blocks per SM (1: the compiler's register choice;
//    4: at most 64 registers, 1,024 threads an SM);
//  * fast_erf: Phi(x) = (1 + erf(x / sqrt 2)) / 2 from erfc's Chebyshev fit (Numerical Recipes'
//    erfcc: relative error < 1.2e-7 everywhere, tails included; one reciprocal, one exp, nine
//    FMAs, no branch) instead of erff (two polynomials and a branch that diverges within a warp
//    holding both |x| < 1 and |x| >= 1), which made the kernels compute-bound at ~2.6 TB/s.
template <int kRows, int kMinBlocks, bool kFastErf>
struct GeluTuning {
  static constexpr int rows = kRows;
  static constexpr int min_blocks = kMinBlocks;
  static constexpr bool fast_erf = kFastErf;
};

constexpr float kSqrtHalf = 0.70710678118654752440f;    // 1 / sqrt(2)
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;  // 1 / sqrt(2 pi)

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}

// kPer consecutive elements at p as float: 16-byte loads and stores (uint4: 8 bf16, float4: 4
// float32) when kPer == kFastCols (p 16-byte aligned), one element otherwise (kPer == 1). (The
// vector types spelled out, and the stores as __stcg (one st.global.cg.v4 each): a plain store of
// a struct or uint4 whose values come out of erff's branches was split into 2- or 4-byte stores.)
__device__ __forceinline__ void unpack(uint32_t word, float& lo, float& hi) {
  __nv_bfloat162 pair;
  memcpy(&pair, &word, 4);
  const float2 f = __bfloat1622float2(pair);
  lo = f.x;
  hi = f.y;
}
__device__ __forceinline__ uint32_t pack(float lo, float hi) {
  const __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
  uint32_t word;
  memcpy(&word, &pair, 4);
  return word;
}

template <int kPer, typename T>
__device__ __forceinline__ void load(const T* __restrict__ p, float (&v)[kPer]) {
  if constexpr (kPer == 1) {
    v[0] = to_float(*p);
  } else if constexpr (std::is_same_v<T, float>) {
#pragma unroll
    for (int i = 0; i < kPer / 4; ++i) {
      const float4 f = reinterpret_cast<const float4*>(p)[i];
      v[4 * i] = f.x;
      v[4 * i + 1] = f.y;
      v[4 * i + 2] = f.z;
      v[4 * i + 3] = f.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < kPer / 8; ++i) {
      const uint4 u = reinterpret_cast<const uint4*>(p)[i];
      unpack(u.x, v[8 * i], v[8 * i + 1]);
      unpack(u.y, v[8 * i + 2], v[8 * i + 3]);
      unpack(u.z, v[8 * i + 4], v[8 * i + 5]);
      unpack(u.w, v[8 * i + 6], v[8 * i + 7]);
    }
  }
}

template <int kPer, typename T>
__device__ __forceinline__ void store(T* __restrict__ p, const float (&v)[kPer]) {
  if constexpr (kPer == 1) {
    *p = from_float<T>(v[0]);
  } else if constexpr (std::is_same_v<T, float>) {
#pragma unroll
    for (int i = 0; i < kPer / 4; ++i) {
      __stcg(reinterpret_cast<float4*>(p) + i,
             make_float4(v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]));
    }
  } else {
#pragma unroll
    for (int i = 0; i < kPer / 8; ++i) {
      __stcg(reinterpret_cast<uint4*>(p) + i,
             make_uint4(pack(v[8 * i], v[8 * i + 1]), pack(v[8 * i + 2], v[8 * i + 3]),
                        pack(v[8 * i + 4], v[8 * i + 5]), pack(v[8 * i + 6], v[8 * i + 7])));
    }
  }
}

// erfc(z) for z >= 0 (Numerical Recipes' erfcc, relative error < 1.2e-7).
__device__ __forceinline__ float erfc_nonnegative(float z) {
  const float t = __fdividef(1.0f, fmaf(0.5f, z, 1.0f));
  float p = 0.17087277f;
  p = fmaf(t, p, -0.82215223f);
  p = fmaf(t, p, 1.48851587f);
  p = fmaf(t, p, -1.13520398f);
  p = fmaf(t, p, 0.27886807f);
  p = fmaf(t, p, -0.18628806f);
  p = fmaf(t, p, 0.09678418f);
  p = fmaf(t, p, 0.37409196f);
  p = fmaf(t, p, 1.00002368f);
  p = fmaf(t, p, -1.26551223f);
  return t * __expf(fmaf(-z, z, p));
}

// Phi(x) = (1 + erf(x / sqrt 2)) / 2, the standard normal CDF.
template <bool kFastErf>
__device__ __forceinline__ float normal_cdf(float x) {
  if constexpr (kFastErf) {
    const float half_tail = 0.5f * erfc_nonnegative(fabsf(x) * kSqrtHalf);
    return x < 0.0f ? half_tail : 1.0f - half_tail;
  } else {
    return 0.5f * (1.0f + erff(x * kSqrtHalf));  // aten's GeluCUDAKernelImpl, approximate "none"
  }
}

// torch's exact GELU and its derivative.
template <bool kFastErf>
__device__ __forceinline__ float gelu(float x) {
  return x * normal_cdf<kFastErf>(x);
}
template <bool kFastErf>
__device__ __forceinline__ float gelu_grad(float x) {
  const float e = -0.5f * x * x;
  const float pdf = (kFastErf ? __expf(e) : expf(e)) * kInvSqrt2Pi;
  return normal_cdf<kFastErf>(x) + x * pdf;
}

// The first column of this thread (kPer of them from there), and its first row and row stride.
template <int kPer>
__device__ __forceinline__ int64_t first_col() {
  return (static_cast<int64_t>(blockIdx.y) * kColThreads + threadIdx.x) * kPer;
}
__device__ __forceinline__ int64_t first_row() {
  return static_cast<int64_t>(blockIdx.x) * kLanes + threadIdx.y;
}
__device__ __forceinline__ int64_t row_stride() { return static_cast<int64_t>(gridDim.x) * kLanes; }

// y = gelu(h0 + bias). kPer == kFastCols: cols % 8 == 0 and every pointer 16-byte aligned.
template <typename T, int kPer, typename Tune>
__global__ void __launch_bounds__(kThreads, Tune::min_blocks)
    forward_kernel(int64_t rows, int64_t cols, const T* __restrict__ h0,
                   const float* __restrict__ bias, T* __restrict__ y) {
  constexpr int kRows = Tune::rows;
  const int64_t c0 = first_col<kPer>();
  if (c0 >= cols) return;  // (cols is a multiple of kPer: a thread's columns are all in or out)
  float b[kPer];
  load<kPer>(bias + c0, b);
  const int64_t step = row_stride();
  for (int64_t r = first_row(); r < rows; r += kRows * step) {
    float v[kRows][kPer];
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      if (r + i * step < rows) load<kPer>(h0 + (r + i * step) * cols + c0, v[i]);
    }
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      if (r + i * step >= rows) break;
#pragma unroll
      for (int k = 0; k < kPer; ++k) v[i][k] = gelu<Tune::fast_erf>(v[i][k] + b[k]);
      store<kPer>(y + (r + i * step) * cols + c0, v[i]);
    }
  }
}

// dh = dy * gelu'(h0 + bias), and this block's column sums of dh (float32, before rounding) as
// row blockIdx.x of partial [gridDim.x, cols]: each thread sums its columns over its rows in
// registers (in row order, whatever Tune::rows), then the block's kLanes rows of sums are added
// in shared memory.
template <typename T, int kPer, typename Tune>
__global__ void __launch_bounds__(kThreads, Tune::min_blocks)
    backward_kernel(int64_t rows, int64_t cols, const T* __restrict__ dy, const T* __restrict__ h0,
                    const float* __restrict__ bias, T* __restrict__ dh,
                    float* __restrict__ partial) {
  constexpr int kRows = Tune::rows;
  constexpr int kTile = kColThreads * kPer;
  __shared__ float sums[kLanes][kTile];
  const int64_t c0 = first_col<kPer>();
  float acc[kPer];
#pragma unroll
  for (int k = 0; k < kPer; ++k) acc[k] = 0.0f;
  if (c0 < cols) {
    float b[kPer];
    load<kPer>(bias + c0, b);
    const int64_t step = row_stride();
    for (int64_t r = first_row(); r < rows; r += kRows * step) {
      float g[kRows][kPer], v[kRows][kPer];
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        if (r + i * step < rows) {
          load<kPer>(dy + (r + i * step) * cols + c0, g[i]);
          load<kPer>(h0 + (r + i * step) * cols + c0, v[i]);
        }
      }
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        if (r + i * step >= rows) break;
#pragma unroll
        for (int k = 0; k < kPer; ++k) {
          v[i][k] = g[i][k] * gelu_grad<Tune::fast_erf>(v[i][k] + b[k]);
          acc[k] += v[i][k];
        }
        store<kPer>(dh + (r + i * step) * cols + c0, v[i]);
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kPer; ++k) sums[threadIdx.y][threadIdx.x * kPer + k] = acc[k];
  __syncthreads();
  const int t = static_cast<int>(threadIdx.y) * kColThreads + static_cast<int>(threadIdx.x);
  for (int j = t; j < kTile; j += kThreads) {
    const int64_t c = static_cast<int64_t>(blockIdx.y) * kTile + j;
    if (c >= cols) break;
    float s = 0.0f;
#pragma unroll
    for (int l = 0; l < kLanes; ++l) s += sums[l][j];
    partial[static_cast<int64_t>(blockIdx.x) * cols + c] = s;
  }
}

// ---- host side: the grid --------------------------------------------------------------------

// Most row groups of the backward (the rows of its partial sums, which the caller then sums).
constexpr int64_t kMaxPartialRows = 256;
// SMs assumed when the runtime cannot say (an H200's).
constexpr int kDefaultSms = 132;

inline int64_t tiles(int64_t cols, int per) {
  const int64_t width = int64_t{kColThreads} * per;
  return (cols + width - 1) / width;
}

// Blocks of `kernel` one SM holds at once (registers, shared memory), 1 when the runtime cannot
// say. Asked once per kernel: the figure is the same on every device of one architecture.
template <typename Kernel>
inline int blocks_per_sm(Kernel kernel) {
  int n = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kThreads, 0) != cudaSuccess) {
    cudaGetLastError();  // not left for check_launch to find
    n = 0;
  }
  return std::max(n, 1);
}

inline int device_sms() {
  int device = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      sms < 1) {
    cudaGetLastError();
    return kDefaultSms;
  }
  return sms;
}

// Row groups for a grid of `col_tiles` column tiles whose kernel fits `per_sm` blocks on an SM:
// one wave on the device (no second, partial wave of grid-striding blocks), at most one group
// per kLanes rows, at most `most`.
inline int64_t row_groups(int64_t rows, int64_t col_tiles, int per_sm, int64_t most) {
  const int64_t wave = static_cast<int64_t>(device_sms()) * per_sm;
  const int64_t groups = std::clamp<int64_t>(wave / col_tiles, 1, most);
  return std::clamp<int64_t>((rows + kLanes - 1) / kLanes, 1, groups);
}

}  // namespace reach::kernels::gpu::bias_gelu_detail
