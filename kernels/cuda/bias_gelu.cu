#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/bias_gelu.hpp"

namespace reach::kernels::gpu {
namespace {

// A block is kColThreads x kLanes threads: kColThreads threads side by side along a row (a warp,
// reading one contiguous stretch of it), kLanes rows at a time. blockIdx.y is the column tile
// (kColThreads x kPer columns: 256 for the fast kernels, 32 for the generic ones), blockIdx.x the
// row group; each thread keeps its tile's bias values and (backward) its columns' sums in
// registers while it strides over the rows.
constexpr int kColThreads = 32;
constexpr int kLanes = 8;
constexpr int kThreads = kColThreads * kLanes;
constexpr int kFastCols = 8;  // columns a thread of the fast kernels takes: 16 bytes of bf16
// Rows a thread loads before computing any (the loads in flight, for the memory system).
constexpr int kRowsAtOnce = 2;
// Most row groups of the backward (the rows of its partial sums, which the caller then sums).
constexpr int64_t kMaxPartialRows = 256;
// SMs assumed when the runtime cannot say (an H200's).
constexpr int kDefaultSms = 132;

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

// torch's exact GELU and its derivative (aten's GeluCUDAKernelImpl, approximate = "none").
__device__ __forceinline__ float gelu(float x) { return 0.5f * x * (1.0f + erff(x * kSqrtHalf)); }
__device__ __forceinline__ float gelu_grad(float x) {
  const float cdf = 0.5f * (1.0f + erff(x * kSqrtHalf));
  const float pdf = expf(-0.5f * x * x) * kInvSqrt2Pi;
  return cdf + x * pdf;
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
template <typename T, int kPer>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(int64_t rows, int64_t cols, const T* __restrict__ h0,
                   const float* __restrict__ bias, T* __restrict__ y) {
  const int64_t c0 = first_col<kPer>();
  if (c0 >= cols) return;  // (cols is a multiple of kPer: a thread's columns are all in or out)
  float b[kPer];
  load<kPer>(bias + c0, b);
  const int64_t step = row_stride();
  for (int64_t r = first_row(); r < rows; r += kRowsAtOnce * step) {
    float v[kRowsAtOnce][kPer];
#pragma unroll
    for (int i = 0; i < kRowsAtOnce; ++i) {
      if (r + i * step < rows) load<kPer>(h0 + (r + i * step) * cols + c0, v[i]);
    }
#pragma unroll
    for (int i = 0; i < kRowsAtOnce; ++i) {
      if (r + i * step >= rows) break;
#pragma unroll
      for (int k = 0; k < kPer; ++k) v[i][k] = gelu(v[i][k] + b[k]);
      store<kPer>(y + (r + i * step) * cols + c0, v[i]);
    }
  }
}

// dh = dy * gelu'(h0 + bias), and this block's column sums of dh (float32, before rounding) as
// row blockIdx.x of partial [gridDim.x, cols]: each thread sums its columns over its rows in
// registers, then the block's kLanes rows of sums are added in shared memory.
template <typename T, int kPer>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(int64_t rows, int64_t cols, const T* __restrict__ dy, const T* __restrict__ h0,
                    const float* __restrict__ bias, T* __restrict__ dh,
                    float* __restrict__ partial) {
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
    for (int64_t r = first_row(); r < rows; r += kRowsAtOnce * step) {
      float g[kRowsAtOnce][kPer], v[kRowsAtOnce][kPer];
#pragma unroll
      for (int i = 0; i < kRowsAtOnce; ++i) {
        if (r + i * step < rows) {
          load<kPer>(dy + (r + i * step) * cols + c0, g[i]);
          load<kPer>(h0 + (r + i * step) * cols + c0, v[i]);
        }
      }
#pragma unroll
      for (int i = 0; i < kRowsAtOnce; ++i) {
        if (r + i * step >= rows) break;
#pragma unroll
        for (int k = 0; k < kPer; ++k) {
          v[i][k] = g[i][k] * gelu_grad(v[i][k] + b[k]);
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

bool aligned16(std::initializer_list<const void*> pointers) {
  return std::all_of(pointers.begin(), pointers.end(),
                     [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; });
}

bool fast_cols(int64_t cols) { return cols % kFastCols == 0; }

int64_t tiles(int64_t cols, int per) {
  const int64_t width = int64_t{kColThreads} * per;
  return (cols + width - 1) / width;
}

// Blocks of `kernel` one SM holds at once (registers, shared memory), 1 when the runtime cannot
// say. Asked once per kernel: the figure is the same on every device of one architecture.
template <typename Kernel>
int blocks_per_sm(Kernel kernel) {
  int n = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kThreads, 0) != cudaSuccess) {
    cudaGetLastError();  // not left for check_launch to find
    n = 0;
  }
  return std::max(n, 1);
}

template <typename T, int kPer>
int forward_blocks_per_sm() {
  static const int n = blocks_per_sm(forward_kernel<T, kPer>);
  return n;
}
template <typename T, int kPer>
int backward_blocks_per_sm() {
  static const int n = blocks_per_sm(backward_kernel<T, kPer>);
  return n;
}

int device_sms() {
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
int64_t row_groups(int64_t rows, int64_t col_tiles, int per_sm, int64_t most) {
  const int64_t wave = static_cast<int64_t>(device_sms()) * per_sm;
  const int64_t groups = std::clamp<int64_t>(wave / col_tiles, 1, most);
  return std::clamp<int64_t>((rows + kLanes - 1) / kLanes, 1, groups);
}

template <typename T>
int64_t partial_rows(int64_t rows, int64_t cols) {
  if (fast_cols(cols)) {
    return row_groups(rows, tiles(cols, kFastCols), backward_blocks_per_sm<T, kFastCols>(),
                      kMaxPartialRows);
  }
  return row_groups(rows, tiles(cols, 1), backward_blocks_per_sm<T, 1>(), kMaxPartialRows);
}

void check(int64_t rows, int64_t cols, std::initializer_list<const void*> pointers) {
  if (rows < 1 || cols < 1) {
    throw std::invalid_argument("bias_gelu: rows and cols must be >= 1, got " +
                                std::to_string(rows) + " x " + std::to_string(cols));
  }
  if (cols > kMaxBiasGeluCols) {
    throw std::invalid_argument("bias_gelu: at most " + std::to_string(kMaxBiasGeluCols) +
                                " columns, got " + std::to_string(cols));
  }
  if (std::any_of(pointers.begin(), pointers.end(), [](const void* p) { return p == nullptr; })) {
    throw std::invalid_argument("bias_gelu: every pointer must be given");
  }
}

void check_launch(const char* what) {
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) {
    throw std::runtime_error(std::string("bias_gelu: ") + what +
                             " launch failed: " + cudaGetErrorString(error));
  }
}

template <typename T>
void forward(int64_t rows, int64_t cols, const void* h0, const float* bias, void* y,
             cudaStream_t stream) {
  const auto* ht = static_cast<const T*>(h0);
  auto* yt = static_cast<T*>(y);
  const dim3 block(kColThreads, kLanes);
  if (fast_cols(cols) && aligned16({h0, bias, y})) {
    const int64_t t = tiles(cols, kFastCols);
    const auto groups = row_groups(rows, t, forward_blocks_per_sm<T, kFastCols>(), rows);
    const dim3 grid(static_cast<unsigned>(groups), static_cast<unsigned>(t));
    forward_kernel<T, kFastCols><<<grid, block, 0, stream>>>(rows, cols, ht, bias, yt);
  } else {
    const int64_t t = tiles(cols, 1);
    const auto groups = row_groups(rows, t, forward_blocks_per_sm<T, 1>(), rows);
    const dim3 grid(static_cast<unsigned>(groups), static_cast<unsigned>(t));
    forward_kernel<T, 1><<<grid, block, 0, stream>>>(rows, cols, ht, bias, yt);
  }
  check_launch("forward");
}

template <typename T>
void backward(int64_t rows, int64_t cols, const void* dy, const void* h0, const float* bias,
              void* dh, float* partial, cudaStream_t stream) {
  const auto* gt = static_cast<const T*>(dy);
  const auto* ht = static_cast<const T*>(h0);
  auto* dht = static_cast<T*>(dh);
  const dim3 block(kColThreads, kLanes);
  // The same row groups on both paths: the caller sized partial by partial_rows.
  const auto groups = static_cast<unsigned>(partial_rows<T>(rows, cols));
  if (fast_cols(cols) && aligned16({dy, h0, bias, dh, partial})) {
    const dim3 grid(groups, static_cast<unsigned>(tiles(cols, kFastCols)));
    backward_kernel<T, kFastCols>
        <<<grid, block, 0, stream>>>(rows, cols, gt, ht, bias, dht, partial);
  } else {
    const dim3 grid(groups, static_cast<unsigned>(tiles(cols, 1)));
    backward_kernel<T, 1><<<grid, block, 0, stream>>>(rows, cols, gt, ht, bias, dht, partial);
  }
  check_launch("backward");
}

}  // namespace

int64_t bias_gelu_backward_partial_rows(int64_t rows, int64_t cols, ScalarType type) {
  check(rows, cols, {});
  return type == ScalarType::kBFloat16 ? partial_rows<__nv_bfloat16>(rows, cols)
                                       : partial_rows<float>(rows, cols);
}

void bias_gelu_forward_cuda(int64_t rows, int64_t cols, ScalarType type, const void* h0,
                            const float* bias, void* y, void* stream) {
  check(rows, cols, {h0, bias, y});
  const auto s = static_cast<cudaStream_t>(stream);
  if (type == ScalarType::kBFloat16) {
    forward<__nv_bfloat16>(rows, cols, h0, bias, y, s);
  } else {
    forward<float>(rows, cols, h0, bias, y, s);
  }
}

void bias_gelu_backward_cuda(int64_t rows, int64_t cols, ScalarType type, const void* dy,
                             const void* h0, const float* bias, void* dh, float* dbias_partial,
                             void* stream) {
  check(rows, cols, {dy, h0, bias, dh, dbias_partial});
  const auto s = static_cast<cudaStream_t>(stream);
  if (type == ScalarType::kBFloat16) {
    backward<__nv_bfloat16>(rows, cols, dy, h0, bias, dh, dbias_partial, s);
  } else {
    backward<float>(rows, cols, dy, h0, bias, dh, dbias_partial, s);
  }
}

}  // namespace reach::kernels::gpu
