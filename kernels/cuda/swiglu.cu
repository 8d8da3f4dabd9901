#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "kernels/cuda/swiglu.hpp"

namespace reach::kernels::gpu {
namespace {

constexpr int kThreads = 256;
// Enough blocks to fill an H200 (132 SMs) many times over; the kernels loop beyond that.
constexpr int64_t kMaxBlocks = 132 * 16;

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

// kVec elements moved as one aligned load or store (16 bytes when kVec * sizeof(T) == 16).
template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

__device__ __forceinline__ float sigmoid(float a) { return 1.0f / (1.0f + expf(-a)); }

struct Forward {
  template <typename T>
  __device__ __forceinline__ void operator()(T a, T b, T& y) const {
    const float av = to_float(a);
    y = from_float<T>(av * sigmoid(av) * to_float(b));
  }
};

struct Backward {
  template <typename T>
  __device__ __forceinline__ void operator()(T dy, T a, T b, T& da, T& db) const {
    const float g = to_float(dy), av = to_float(a), s = sigmoid(av);
    da = from_float<T>(g * to_float(b) * s * (1.0f + av * (1.0f - s)));
    db = from_float<T>(g * av * s);
  }
};

// Elements [0, count / kVec * kVec) in packs of kVec, grid-stride; the remaining < kVec by the
// first threads of the grid, one each.
template <typename T, int kVec>
__global__ void forward_kernel(int64_t count, const T* a, const T* b, T* y) {
  using P = Pack<T, kVec>;
  const int64_t packs = count / kVec;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const Forward op;
  for (int64_t p = first; p < packs; p += stride) {
    const P av = reinterpret_cast<const P*>(a)[p], bv = reinterpret_cast<const P*>(b)[p];
    P out;
#pragma unroll
    for (int k = 0; k < kVec; ++k) op(av.v[k], bv.v[k], out.v[k]);
    reinterpret_cast<P*>(y)[p] = out;
  }
  const int64_t tail = packs * kVec + first;
  if (tail < count) op(a[tail], b[tail], y[tail]);
}

template <typename T, int kVec>
__global__ void backward_kernel(int64_t count, const T* dy, const T* a, const T* b, T* da, T* db) {
  using P = Pack<T, kVec>;
  const int64_t packs = count / kVec;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const Backward op;
  for (int64_t p = first; p < packs; p += stride) {
    const P gv = reinterpret_cast<const P*>(dy)[p], av = reinterpret_cast<const P*>(a)[p],
            bv = reinterpret_cast<const P*>(b)[p];
    P dav, dbv;
#pragma unroll
    for (int k = 0; k < kVec; ++k) op(gv.v[k], av.v[k], bv.v[k], dav.v[k], dbv.v[k]);
    reinterpret_cast<P*>(da)[p] = dav;
    reinterpret_cast<P*>(db)[p] = dbv;
  }
  const int64_t tail = packs * kVec + first;
  if (tail < count) op(dy[tail], a[tail], b[tail], da[tail], db[tail]);
}

bool aligned16(std::initializer_list<const void*> pointers) {
  return std::all_of(pointers.begin(), pointers.end(),
                     [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; });
}

// Blocks for `count` elements handled kVec at a time (at least one, for the tail).
unsigned blocks_for(int64_t count, int vec) {
  const int64_t work = std::max<int64_t>(count / vec, 1);
  return static_cast<unsigned>(std::min<int64_t>((work + kThreads - 1) / kThreads, kMaxBlocks));
}

void check(int64_t count, std::initializer_list<const void*> pointers) {
  if (count < 0) {
    throw std::invalid_argument("swiglu: count must be >= 0, got " + std::to_string(count));
  }
  if (count > 0 &&
      std::any_of(pointers.begin(), pointers.end(), [](const void* p) { return p == nullptr; })) {
    throw std::invalid_argument("swiglu: every pointer must be given");
  }
}

void check_launch(const char* what) {
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) {
    throw std::runtime_error(std::string("swiglu: ") + what +
                             " launch failed: " + cudaGetErrorString(error));
  }
}

template <typename T>
void forward(int64_t count, const void* a, const void* b, void* y, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const auto* at = static_cast<const T*>(a);
  const auto* bt = static_cast<const T*>(b);
  auto* yt = static_cast<T*>(y);
  if (aligned16({a, b, y})) {
    forward_kernel<T, kVec><<<blocks_for(count, kVec), kThreads, 0, stream>>>(count, at, bt, yt);
  } else {
    forward_kernel<T, 1><<<blocks_for(count, 1), kThreads, 0, stream>>>(count, at, bt, yt);
  }
  check_launch("forward");
}

template <typename T>
void backward(int64_t count, const void* dy, const void* a, const void* b, void* da, void* db,
              cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const auto* gt = static_cast<const T*>(dy);
  const auto* at = static_cast<const T*>(a);
  const auto* bt = static_cast<const T*>(b);
  auto* dat = static_cast<T*>(da);
  auto* dbt = static_cast<T*>(db);
  if (aligned16({dy, a, b, da, db})) {
    backward_kernel<T, kVec>
        <<<blocks_for(count, kVec), kThreads, 0, stream>>>(count, gt, at, bt, dat, dbt);
  } else {
    backward_kernel<T, 1>
        <<<blocks_for(count, 1), kThreads, 0, stream>>>(count, gt, at, bt, dat, dbt);
  }
  check_launch("backward");
}

}  // namespace

void swiglu_forward_cuda(int64_t count, ScalarType type, const void* a, const void* b, void* y,
                         void* stream) {
  check(count, {a, b, y});
  if (count == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  if (type == ScalarType::kBFloat16) {
    forward<__nv_bfloat16>(count, a, b, y, s);
  } else {
    forward<float>(count, a, b, y, s);
  }
}

void swiglu_backward_cuda(int64_t count, ScalarType type, const void* dy, const void* a,
                          const void* b, void* da, void* db, void* stream) {
  check(count, {dy, a, b, da, db});
  if (count == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  if (type == ScalarType::kBFloat16) {
    backward<__nv_bfloat16>(count, dy, a, b, da, db, s);
  } else {
    backward<float>(count, dy, a, b, da, db, s);
  }
}

}  // namespace reach::kernels::gpu
