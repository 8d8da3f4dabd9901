#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "kernels/cuda/add_layer_norm.hpp"

namespace reach::kernels::gpu {
namespace {

constexpr int kWarps = 8;  // rows in flight per block

__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ void store(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, int64_t i, float v) {
  p[i] = __float2bfloat16(v);
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// kRms: RMSNorm (no centring, no beta: mean is 0 and not written); else LayerNorm.
template <bool kRms, typename R, typename Y>
__global__ void forward_kernel(int64_t rows, int dim, float eps, const float* x, const R* r,
                               const float* gamma, const float* beta, float* h, Y* y,
                               float* mean_out, float* rstd_out) {
  const int lane = threadIdx.x % 32;
  const int64_t row = blockIdx.x * static_cast<int64_t>(kWarps) + threadIdx.x / 32;
  if (row >= rows) return;
  const float* xr = x + row * dim;
  const R* rr = r == nullptr ? nullptr : r + row * dim;
  auto value = [&](int c) { return rr == nullptr ? xr[c] : xr[c] + load(rr, c); };
  // LayerNorm: the row sum here, the centred squares in a second pass; RMSNorm: the squares.
  float sum = 0;
  for (int c = lane; c < dim; c += 32) {
    const float v = value(c);
    if (h != nullptr) h[row * dim + c] = v;
    sum += kRms ? v * v : v;
  }
  float mean = 0, square_mean;
  if constexpr (kRms) {
    square_mean = warp_sum(sum) / static_cast<float>(dim);
  } else {
    mean = warp_sum(sum) / static_cast<float>(dim);
    float var = 0;
    for (int c = lane; c < dim; c += 32) {
      const float d = value(c) - mean;
      var += d * d;
    }
    square_mean = warp_sum(var) / static_cast<float>(dim);
  }
  const float rstd = rsqrtf(square_mean + eps);
  for (int c = lane; c < dim; c += 32) {
    const float scaled = (value(c) - mean) * rstd * gamma[c];
    store(y, row * dim + c, kRms ? scaled : scaled + beta[c]);
  }
  if (lane == 0) {
    if (!kRms) mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// Each warp owns a slice of its block's shared partials (dgamma, and dbeta for LayerNorm, per
// column); the block sums its warps' slices into row blockIdx.x of the partial outputs.
// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma; RMSNorm has no mean(g)
// term (xhat = h * rstd: nothing was centred).
template <bool kRms, typename R, typename Y>
__global__ void backward_kernel(int64_t rows, int dim, const Y* dy, const float* dh, const float* h,
                                const float* mean_in, const float* rstd_in, const float* gamma,
                                float* dx, R* dr, float* dgamma_partial, float* dbeta_partial) {
  extern __shared__ float shared[];  // [kRms ? 1 : 2][kWarps][dim]
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float* sg = shared + warp * dim;
  float* sb = kRms ? nullptr : shared + (kWarps + warp) * dim;
  for (int c = lane; c < dim; c += 32) {
    sg[c] = 0;
    if (!kRms) sb[c] = 0;
  }
  const float n = static_cast<float>(dim);
  for (int64_t row = blockIdx.x * static_cast<int64_t>(kWarps) + warp; row < rows;
       row += static_cast<int64_t>(gridDim.x) * kWarps) {
    const float mean = kRms ? 0.0f : mean_in[row], rstd = rstd_in[row];
    const int64_t base = row * dim;
    float sum_g = 0, sum_gx = 0;
    // dy * gamma rounded the same way in both passes (__fmul_rn: no fused multiply-add), so
    // a row whose terms cancel exactly (D = 1: var = 0, rstd = 1 / sqrt(eps)) gets exactly 0
    // before rstd amplifies it.
    for (int c = lane; c < dim; c += 32) {
      const float g = load(dy, base + c);
      const float xhat = (h[base + c] - mean) * rstd;
      const float gg = __fmul_rn(g, gamma[c]);
      sum_g += gg;
      sum_gx += gg * xhat;
      sg[c] += g * xhat;
      if (!kRms) sb[c] += g;
    }
    sum_g = kRms ? 0.0f : warp_sum(sum_g) / n;
    sum_gx = warp_sum(sum_gx) / n;
    for (int c = lane; c < dim; c += 32) {
      const float xhat = (h[base + c] - mean) * rstd;
      float d = rstd * (__fmul_rn(load(dy, base + c), gamma[c]) - sum_g - xhat * sum_gx);
      if (dh != nullptr) d += dh[base + c];
      if (dx != nullptr) dx[base + c] = d;
      if (dr != nullptr) store(dr, base + c, d);
    }
  }
  __syncthreads();
  for (int c = threadIdx.x; c < dim; c += blockDim.x) {
    float g = 0, b = 0;
    for (int w = 0; w < kWarps; ++w) {
      g += shared[w * dim + c];
      if (!kRms) b += shared[(kWarps + w) * dim + c];
    }
    dgamma_partial[blockIdx.x * static_cast<int64_t>(dim) + c] = g;
    if (!kRms) dbeta_partial[blockIdx.x * static_cast<int64_t>(dim) + c] = b;
  }
}

// The fast path (dim a multiple of 128, <= kMaxLayerNormDim, vector-aligned pointers): lane l of
// a warp owns the kVpl = dim / 32 columns j * 128 + 4 * l + {0..3} (j < kVpl / 4), so a warp
// moves a row in 512-byte (float32) or 256-byte (bf16) coalesced vector accesses; the row is
// read from global memory once and kept in registers for the statistics and the output.
constexpr int kForwardWarps = 8;   // rows per forward block: one row per warp
constexpr int kBackwardWarps = 4;  // warps per backward block (small: finer occupancy steps)

// 4-element accesses: float4 for float32, uint2 holding four bf16 bit patterns (bf16 -> float32
// is exact: the bits shifted into a float's upper half). Stores through __stwb (st.global.wb, the
// default policy) so that each is one vector instruction.
__device__ __forceinline__ void load4(const float* p, float* v) {
  const float4 q = *reinterpret_cast<const float4*>(p);
  v[0] = q.x;
  v[1] = q.y;
  v[2] = q.z;
  v[3] = q.w;
}
__device__ __forceinline__ void load4(const __nv_bfloat16* p, float* v) {
  const uint2 q = *reinterpret_cast<const uint2*>(p);
  v[0] = __uint_as_float(q.x << 16);
  v[1] = __uint_as_float(q.x & 0xFFFF0000u);
  v[2] = __uint_as_float(q.y << 16);
  v[3] = __uint_as_float(q.y & 0xFFFF0000u);
}
__device__ __forceinline__ void store4(float* p, const float* v) {
  __stwb(reinterpret_cast<float4*>(p), make_float4(v[0], v[1], v[2], v[3]));
}
// Two floats rounded to nearest even (as __float2bfloat16 in the generic kernels), the first in
// the low half.
__device__ __forceinline__ unsigned bf16_pair(float a, float b) {
  const __nv_bfloat162 q = __floats2bfloat162_rn(a, b);
  return static_cast<unsigned>(__bfloat16_as_ushort(q.x)) |
         (static_cast<unsigned>(__bfloat16_as_ushort(q.y)) << 16);
}
__device__ __forceinline__ void store4(__nv_bfloat16* p, const float* v) {
  __stwb(reinterpret_cast<uint2*>(p), make_uint2(bf16_pair(v[0], v[1]), bf16_pair(v[2], v[3])));
}

// forward_kernel's arithmetic with the row in registers: h = x + r, then the mean, then the sum
// of centred squares (RMSNorm: of squares) from the registers, then y.
template <bool kRms, typename R, typename Y, int kVpl>
__global__ void __launch_bounds__(kForwardWarps * 32)
    forward_fast_kernel(int64_t rows, float eps, const float* x, const R* r, const float* gamma,
                        const float* beta, float* h, Y* y, float* mean_out, float* rstd_out) {
  constexpr int kDim = kVpl * 32, kChunks = kVpl / 4;
  const int lane = threadIdx.x % 32;
  const int64_t row = blockIdx.x * static_cast<int64_t>(kForwardWarps) + threadIdx.x / 32;
  if (row >= rows) return;
  const int64_t base = row * kDim + lane * 4;
  float v[kVpl];
  if (r != nullptr) {
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
      float t[4];
      load4(x + base + j * 128, v + 4 * j);
      load4(r + base + j * 128, t);
#pragma unroll
      for (int k = 0; k < 4; ++k) v[4 * j + k] += t[k];
    }
  } else {
#pragma unroll
    for (int j = 0; j < kChunks; ++j) load4(x + base + j * 128, v + 4 * j);
  }
  if (h != nullptr) {
#pragma unroll
    for (int j = 0; j < kChunks; ++j) store4(h + base + j * 128, v + 4 * j);
  }
  float sum = 0;
#pragma unroll
  for (int i = 0; i < kVpl; ++i) sum += kRms ? v[i] * v[i] : v[i];
  float mean = 0, square_mean;
  if constexpr (kRms) {
    square_mean = warp_sum(sum) / static_cast<float>(kDim);
  } else {
    mean = warp_sum(sum) / static_cast<float>(kDim);
    float var = 0;
#pragma unroll
    for (int i = 0; i < kVpl; ++i) {
      const float d = v[i] - mean;
      var += d * d;
    }
    square_mean = warp_sum(var) / static_cast<float>(kDim);
  }
  const float rstd = rsqrtf(square_mean + eps);
#pragma unroll
  for (int j = 0; j < kChunks; ++j) {
    const int c = j * 128 + lane * 4;
    float g[4], b[4], out[4];
    load4(gamma + c, g);
    if (!kRms) load4(beta + c, b);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float scaled = (v[4 * j + k] - mean) * rstd * g[k];
      out[k] = kRms ? scaled : scaled + b[k];
    }
    store4(y + base + j * 128, out);
  }
  if (lane == 0) {
    if (!kRms) mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// backward_kernel's arithmetic with dy, h and dh of a row loaded once into registers; each warp
// takes rows grid-stride and sums its dgamma (and dbeta) terms per lane in registers, and the
// block adds its warps' sums in shared memory once at the end (row blockIdx.x of the partials).
template <bool kRms, typename R, typename Y, int kVpl>
__global__ void __launch_bounds__(kBackwardWarps * 32)
    backward_fast_kernel(int64_t rows, const Y* dy, const float* dh, const float* h,
                         const float* mean_in, const float* rstd_in, const float* gamma, float* dx,
                         R* dr, float* dgamma_partial, float* dbeta_partial) {
  constexpr int kDim = kVpl * 32, kChunks = kVpl / 4;
  __shared__ float shared[kBackwardWarps][kDim];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float pg[kVpl], pb[kVpl];
#pragma unroll
  for (int i = 0; i < kVpl; ++i) pg[i] = pb[i] = 0;
  const float n = static_cast<float>(kDim);
  for (int64_t row = blockIdx.x * static_cast<int64_t>(kBackwardWarps) + warp; row < rows;
       row += static_cast<int64_t>(gridDim.x) * kBackwardWarps) {
    const float mean = kRms ? 0.0f : mean_in[row], rstd = rstd_in[row];
    const int64_t base = row * kDim + lane * 4;
    float g[kVpl], xhat[kVpl], extra[kVpl];
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
      load4(dy + base + j * 128, g + 4 * j);
      load4(h + base + j * 128, xhat + 4 * j);
    }
    if (dh != nullptr) {
#pragma unroll
      for (int j = 0; j < kChunks; ++j) load4(dh + base + j * 128, extra + 4 * j);
    }
    // g becomes dy * gamma, rounded once (__fmul_rn: no fused multiply-add) and used both in
    // the sums and in dx, so a row whose terms cancel exactly gets exactly 0.
    float sum_g = 0, sum_gx = 0;
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
      float gm[4];
      load4(gamma + j * 128 + lane * 4, gm);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int i = 4 * j + k;
        xhat[i] = (xhat[i] - mean) * rstd;
        pg[i] += g[i] * xhat[i];
        if (!kRms) pb[i] += g[i];
        g[i] = __fmul_rn(g[i], gm[k]);
        sum_g += g[i];
        sum_gx += g[i] * xhat[i];
      }
    }
    sum_g = kRms ? 0.0f : warp_sum(sum_g) / n;
    sum_gx = warp_sum(sum_gx) / n;
#pragma unroll
    for (int i = 0; i < kVpl; ++i) {
      float d = rstd * (g[i] - sum_g - xhat[i] * sum_gx);
      if (dh != nullptr) d += extra[i];
      g[i] = d;
    }
    if (dx != nullptr) {
#pragma unroll
      for (int j = 0; j < kChunks; ++j) store4(dx + base + j * 128, g + 4 * j);
    }
    if (dr != nullptr) {
#pragma unroll
      for (int j = 0; j < kChunks; ++j) store4(dr + base + j * 128, g + 4 * j);
    }
  }
  // dgamma, then dbeta, through the one [warps][dim] buffer.
  const auto reduce = [&](const float* partial, float* out) {
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {  // (not store4: its __stwb is a global-memory store)
      *reinterpret_cast<float4*>(&shared[warp][j * 128 + lane * 4]) =
          make_float4(partial[4 * j], partial[4 * j + 1], partial[4 * j + 2], partial[4 * j + 3]);
    }
    __syncthreads();
    for (int c = threadIdx.x; c < kDim; c += blockDim.x) {
      float s = 0;
#pragma unroll
      for (int w = 0; w < kBackwardWarps; ++w) s += shared[w][c];
      out[blockIdx.x * static_cast<int64_t>(kDim) + c] = s;
    }
  };
  reduce(pg, dgamma_partial);
  if (!kRms) {
    __syncthreads();
    reduce(pb, dbeta_partial);
  }
}

void check(const AddLayerNormArgs& a) {
  if (a.rows < 1 || a.dim < 1 || a.dim > kMaxLayerNormDim || !(a.eps > 0)) {
    throw std::invalid_argument(
        "add_layer_norm: rows >= 1, 1 <= dim <= " + std::to_string(kMaxLayerNormDim) +
        " and eps > 0, got rows " + std::to_string(a.rows) + " dim " + std::to_string(a.dim));
  }
}

void check_launch(const char* what) {
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) {
    throw std::runtime_error(std::string("add_layer_norm: ") + what +
                             " launch failed: " + cudaGetErrorString(error));
  }
}

// Whether dim takes the fast kernels (the pointers' alignment is checked at launch).
bool fast_dim(int64_t dim) { return dim % 128 == 0 && dim <= kMaxLayerNormDim; }

// Calls f(std::integral_constant<int, dim / 32>) for a fast_dim.
template <typename F>
void with_vpl(int64_t dim, F&& f) {
  switch (dim / 32) {
    case 4:
      return f(std::integral_constant<int, 4>{});
    case 8:
      return f(std::integral_constant<int, 8>{});
    case 12:
      return f(std::integral_constant<int, 12>{});
    case 16:
      return f(std::integral_constant<int, 16>{});
    case 20:
      return f(std::integral_constant<int, 20>{});
    case 24:
      return f(std::integral_constant<int, 24>{});
    default:
      throw std::logic_error("add_layer_norm: no fast kernel for dim " + std::to_string(dim));
  }
}

// Every non-null pointer aligned for the fast kernels' 4-element accesses: 16 bytes for
// float32, 8 for bf16.
bool aligned(std::initializer_list<std::pair<const void*, size_t>> pointers) {
  return std::all_of(pointers.begin(), pointers.end(), [](const auto& p) {
    return reinterpret_cast<uintptr_t>(p.first) % (4 * p.second) == 0;
  });
}

template <bool kRms, typename R, typename Y>
void forward(const AddLayerNormArgs& a, const float* x, const void* r, const float* gamma,
             const float* beta, float* h, void* y, float* mean, float* rstd, cudaStream_t stream) {
  if (fast_dim(a.dim) &&
      aligned({{x, 4}, {r, sizeof(R)}, {gamma, 4}, {beta, 4}, {h, 4}, {y, sizeof(Y)}})) {
    const int64_t blocks = (a.rows + kForwardWarps - 1) / kForwardWarps;
    with_vpl(a.dim, [&](auto vpl) {
      forward_fast_kernel<kRms, R, Y, decltype(vpl)::value>
          <<<static_cast<unsigned>(blocks), kForwardWarps * 32, 0, stream>>>(
              a.rows, static_cast<float>(a.eps), x, static_cast<const R*>(r), gamma, beta, h,
              static_cast<Y*>(y), mean, rstd);
    });
    check_launch("forward");
    return;
  }
  const int64_t blocks = (a.rows + kWarps - 1) / kWarps;
  forward_kernel<kRms, R, Y><<<static_cast<unsigned>(blocks), kWarps * 32, 0, stream>>>(
      a.rows, static_cast<int>(a.dim), static_cast<float>(a.eps), x, static_cast<const R*>(r),
      gamma, beta, h, static_cast<Y*>(y), mean, rstd);
  check_launch("forward");
}

// Blocks of backward_fast_kernel one SM holds at once (registers, shared memory), 0 when the
// runtime cannot say. Asked once per instantiation: the figure is the same on every device of
// one architecture (a process with mixed architectures only gets a less well sized grid).
template <bool kRms, typename R, typename Y, int kVpl>
int backward_fast_blocks_per_sm() {
  static const int blocks = [] {
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, backward_fast_kernel<kRms, R, Y, kVpl>,
                                                      kBackwardWarps * 32, 0) != cudaSuccess) {
      cudaGetLastError();  // not left for check_launch to find
      n = 0;
    }
    return n;
  }();
  return blocks;
}

template <bool kRms, typename R, typename Y>
void backward(const AddLayerNormArgs& a, const void* dy, const float* dh, const float* h,
              const float* mean, const float* rstd, const float* gamma, float* dx, void* dr,
              float* dgamma_partial, float* dbeta_partial, cudaStream_t stream) {
  const auto blocks = static_cast<unsigned>(add_layer_norm_backward_blocks(a));
  if (fast_dim(a.dim) &&
      aligned({{dy, sizeof(Y)}, {dh, 4}, {h, 4}, {gamma, 4}, {dx, 4}, {dr, sizeof(R)}})) {
    with_vpl(a.dim, [&](auto vpl) {
      backward_fast_kernel<kRms, R, Y, decltype(vpl)::value>
          <<<blocks, kBackwardWarps * 32, 0, stream>>>(a.rows, static_cast<const Y*>(dy), dh, h,
                                                       mean, rstd, gamma, dx, static_cast<R*>(dr),
                                                       dgamma_partial, dbeta_partial);
    });
    check_launch("backward");
    return;
  }
  const auto shared = static_cast<size_t>((kRms ? 1 : 2) * kWarps * a.dim) * sizeof(float);
  backward_kernel<kRms, R, Y><<<blocks, kWarps * 32, shared, stream>>>(
      a.rows, static_cast<int>(a.dim), static_cast<const Y*>(dy), dh, h, mean, rstd, gamma, dx,
      static_cast<R*>(dr), dgamma_partial, dbeta_partial);
  check_launch("backward");
}

template <typename T>
struct Type {
  using type = T;
};

// Calls launch(kind, r type, y type) with the args' norm as a std::integral_constant<bool, kRms>
// and the element types as Type<...> tags: the eight kernel instantiations in one place.
template <typename Launch>
void dispatch(const AddLayerNormArgs& a, Launch&& launch) {
  const auto with_rms = [&](auto rms) {
    const bool r_bf16 = a.r_type == ScalarType::kBFloat16;
    const bool y_bf16 = a.y_type == ScalarType::kBFloat16;
    if (r_bf16 && y_bf16) {
      launch(rms, Type<__nv_bfloat16>{}, Type<__nv_bfloat16>{});
    } else if (r_bf16) {
      launch(rms, Type<__nv_bfloat16>{}, Type<float>{});
    } else if (y_bf16) {
      launch(rms, Type<float>{}, Type<__nv_bfloat16>{});
    } else {
      launch(rms, Type<float>{}, Type<float>{});
    }
  };
  if (a.kind == NormKind::kRmsNorm) {
    with_rms(std::true_type{});
  } else {
    with_rms(std::false_type{});
  }
}

}  // namespace

int64_t add_layer_norm_backward_blocks(const AddLayerNormArgs& args) {
  // Generic dims: enough blocks to fill an H200 a few times over (132 SMs), few enough that
  // summing the partials is cheap: 512 x D floats.
  const int64_t generic = std::clamp<int64_t>((args.rows + kWarps - 1) / kWarps, 1, 512);
  if (!fast_dim(args.dim)) return generic;
  // Fast dims: as many blocks as the device holds at once (one wave: no second, partial wave
  // of grid-stride warps), or fewer when there are fewer rows. The generic kernel, run for
  // misaligned pointers, grid-strides over any count.
  int device = 0, sms = 0, per_sm = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    cudaGetLastError();
    return generic;
  }
  dispatch(args, [&](auto rms, auto r_type, auto y_type) {
    with_vpl(args.dim, [&](auto vpl) {
      per_sm = backward_fast_blocks_per_sm<decltype(rms)::value, typename decltype(r_type)::type,
                                           typename decltype(y_type)::type, decltype(vpl)::value>();
    });
  });
  if (per_sm < 1) return generic;
  return std::clamp<int64_t>((args.rows + kBackwardWarps - 1) / kBackwardWarps, 1,
                             static_cast<int64_t>(sms) * per_sm);
}

void add_layer_norm_forward_cuda(const AddLayerNormArgs& args, const float* x, const void* r,
                                 const float* gamma, const float* beta, float* h, void* y,
                                 float* mean, float* rstd, void* stream) {
  check(args);
  if (r != nullptr && h == nullptr) {
    throw std::invalid_argument("add_layer_norm: h must be given when r is");
  }
  if (args.kind == NormKind::kLayerNorm && (beta == nullptr || mean == nullptr)) {
    throw std::invalid_argument("add_layer_norm: LayerNorm needs beta and mean");
  }
  const auto s = static_cast<cudaStream_t>(stream);
  dispatch(args, [&](auto rms, auto r_type, auto y_type) {
    forward<decltype(rms)::value, typename decltype(r_type)::type, typename decltype(y_type)::type>(
        args, x, r, gamma, beta, h, y, mean, rstd, s);
  });
}

void add_layer_norm_backward_cuda(const AddLayerNormArgs& args, const void* dy, const float* dh,
                                  const float* h, const float* mean, const float* rstd,
                                  const float* gamma, float* dx, void* dr, float* dgamma_partial,
                                  float* dbeta_partial, void* stream) {
  check(args);
  if (args.kind == NormKind::kLayerNorm && (mean == nullptr || dbeta_partial == nullptr)) {
    throw std::invalid_argument("add_layer_norm: LayerNorm's backward needs mean and dbeta");
  }
  const auto s = static_cast<cudaStream_t>(stream);
  dispatch(args, [&](auto rms, auto r_type, auto y_type) {
    backward<decltype(rms)::value, typename decltype(r_type)::type,
             typename decltype(y_type)::type>(args, dy, dh, h, mean, rstd, gamma, dx, dr,
                                              dgamma_partial, dbeta_partial, s);
  });
}

}  // namespace reach::kernels::gpu
