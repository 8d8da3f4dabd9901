#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>

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

template <bool kRms, typename R, typename Y>
void forward(const AddLayerNormArgs& a, const float* x, const void* r, const float* gamma,
             const float* beta, float* h, void* y, float* mean, float* rstd, cudaStream_t stream) {
  const int64_t blocks = (a.rows + kWarps - 1) / kWarps;
  forward_kernel<kRms, R, Y><<<static_cast<unsigned>(blocks), kWarps * 32, 0, stream>>>(
      a.rows, static_cast<int>(a.dim), static_cast<float>(a.eps), x, static_cast<const R*>(r),
      gamma, beta, h, static_cast<Y*>(y), mean, rstd);
  check_launch("forward");
}

template <bool kRms, typename R, typename Y>
void backward(const AddLayerNormArgs& a, const void* dy, const float* dh, const float* h,
              const float* mean, const float* rstd, const float* gamma, float* dx, void* dr,
              float* dgamma_partial, float* dbeta_partial, cudaStream_t stream) {
  const auto shared = static_cast<size_t>((kRms ? 1 : 2) * kWarps * a.dim) * sizeof(float);
  backward_kernel<kRms, R, Y>
      <<<static_cast<unsigned>(add_layer_norm_backward_blocks(a)), kWarps * 32, shared, stream>>>(
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
  // Enough blocks to fill an H200 a few times over (132 SMs), few enough that summing the
  // partials is cheap: 512 x D floats.
  return std::clamp<int64_t>((args.rows + kWarps - 1) / kWarps, 1, 512);
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
