// CUDA kernels of alpha-entmax / ASEntmax / SSMax attention; see entmax_attention.hpp for the
// design and docs/entmax.md for the definition and the formulas of the backward.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/dilated_attention.hpp"  // kMaxOffsets, which dilated_attention_tc.cuh reads
#include "kernels/cuda/dilated_attention_tc.cuh"
#include "kernels/cuda/entmax_attention.hpp"

namespace reach::kernels::gpu {
namespace {

constexpr int kTile = 64;      // queries and keys per tile (tiled path)
constexpr int kThreads = 256;  // 16 x 16 threads, each a 4 x 4 patch of a 64 x 64 tile
constexpr int kPoints = 8;     // points of the one multi-point bisection pass
constexpr int kRowWarps = 4;   // queries per block (row path)
// Newton passes of the row path's threshold solve before it stops (safeguarded: past ~55 the
// bracket's bisection fallback alone has reached float64 precision).
constexpr int kMaxNewtonPasses = 64;
constexpr int kMaskWords = static_cast<int>(kMaxTiledLength / kTile / 32);
constexpr double kSolveTolerance = 1e-6;  // |f(tau) - 1| at which a row's tau is final

// Everything the kernels read besides the tensors; passed by value.
struct DeviceParams {
  int64_t batch_heads, n;
  int d, heads, window_slots, offsets, slots;  // slots = window_slots + offsets (row path)
  int64_t window;
  int offset[kMaxEntmaxOffsets];
  float scale;
  bool softmax, scaling, per_query;
  bool vec;  // row path: q, k, v, grad_out rows are 16-byte aligned (lane_dot's wide loads)
  const double *alpha, *delta, *beta, *gamma, *alibi;
};

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("entmax attention (CUDA): ") + what + ": " +
                             cudaGetErrorString(status));
  }
}

__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

__device__ __forceinline__ float load(const float* p) { return *p; }
__device__ __forceinline__ float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void store(float* p, float x) { *p = x; }
__device__ __forceinline__ void store(__nv_bfloat16* p, float x) { *p = __float2bfloat16(x); }

// How a head normalises: softmax, or entmax with exponent r = 1 / (a - 1) in the three forms
// that matter for speed (a = 2: r = 1; a = 1.5: r = 2; anything else: pow).
struct Normaliser {
  int kind;  // 0 softmax, 1 r == 1, 2 r == 2, 3 general
  float am1, r;
  double am1_d, r_d, alpha;
};

__device__ Normaliser normaliser_of(const DeviceParams& p, int h) {
  Normaliser m{};
  if (p.softmax) {
    m.kind = 0;
    m.alpha = 1.0;
    return m;
  }
  const double a = p.alpha[h];
  m.alpha = a;
  m.am1_d = a - 1.0;
  m.r_d = 1.0 / (a - 1.0);
  m.am1 = static_cast<float>(m.am1_d);
  m.r = static_cast<float>(m.r_d);
  m.kind = a == 2.0 ? 1 : (a == 1.5 ? 2 : 3);
  return m;
}

// y^r for y > 0 (float).
__device__ __forceinline__ float power(const Normaliser& m, float y) {
  if (m.kind == 1) return y;
  if (m.kind == 2) return y * y;
  return __powf(y, m.r);
}

// s = p^(2 - a), the weight of the entmax Jacobian (p for softmax), for p > 0.
__device__ __forceinline__ float jacobian_weight(const Normaliser& m, float prob) {
  if (m.kind == 0) return prob;
  if (m.kind == 1) return 1.0f;
  if (m.kind == 2) return sqrtf(prob);
  return __powf(prob, 2.0f - static_cast<float>(m.alpha));
}

// x^y for x > 0 as exp(y log x): double pow() calls a non-inlined slow path whose ABI spills
// registers in the tensor-core kernels.
__device__ __forceinline__ double positive_pow(double x, double y) { return exp(y * log(x)); }

// Index of beta and gamma for row i of head bh.
__device__ __forceinline__ int64_t scale_index(const DeviceParams& p, int64_t bh, int64_t i) {
  return p.per_query ? bh * p.n + i : bh % p.heads;
}

// c_i = delta + beta * log(visible + 1)^gamma (1 without scaling).
__device__ __forceinline__ double multiplier(const DeviceParams& p, int64_t bh, int64_t i,
                                             int64_t visible) {
  if (!p.scaling) return 1.0;
  const int64_t s = scale_index(p, bh, i);
  const double log_n = log(static_cast<double>(visible) + 1.0);
  return p.delta[bh % p.heads] + p.beta[s] * positive_pow(log_n, p.gamma[s]);
}

// The per-row parameter gradients from dL/dc (row_grads layout: [4][rows]).
__device__ __forceinline__ void write_row_grads(const DeviceParams& p, double* row_grads,
                                                int64_t bh, int64_t i, int64_t visible,
                                                double dalpha, double dc) {
  if (!row_grads) return;
  const int64_t rows = p.batch_heads * p.n, row = bh * p.n + i;
  row_grads[row] = dalpha;
  row_grads[rows + row] = dc;
  double dbeta = 0, dgamma = 0;
  if (p.scaling) {
    const int64_t s = scale_index(p, bh, i);
    const double log_n = log(static_cast<double>(visible) + 1.0);
    const double lg = positive_pow(log_n, p.gamma[s]);
    dbeta = dc * lg;
    dgamma = dc * p.beta[s] * lg * log(log_n);
  }
  row_grads[2 * rows + row] = dbeta;
  row_grads[3 * rows + row] = dgamma;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return __shfl_sync(0xffffffffu, x, 0);  // one value for every lane (sums' order differs)
}

// Sum over the 16 lanes that share a tile row (tx = lane % 16); the result in every such lane.
template <typename T>
__device__ __forceinline__ T row_sum(T x) {
  for (int o = 8; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ float row_max(float x) {
  for (int o = 8; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// ------------------------------------------------------------------------------------------
// Tiled path. Thread (ty, tx) = (tid / 16, tid % 16) owns rows ty + 16 a and columns tx + 16 b
// (a, b < 4) of a 64 x 64 tile. Shared tiles are float [64][DP + 1] (padding: no bank conflicts).

template <int DP>
struct Tiles {
  static constexpr int kLd = DP + 1;
  static constexpr int kTileFloats = kTile * kLd;
  static constexpr int kProbFloats = kTile * (kTile + 1);
};

// Rows [row0, row0 + 64) of a [BH, n, d] tensor into a float tile (zeros past n and d),
// times `factor`.
template <typename T, int DP>
__device__ void load_tile(float* tile, const T* x, int64_t bh, int64_t row0, int64_t n, int d,
                          float factor) {
  constexpr int kLd = Tiles<DP>::kLd;
  for (int idx = threadIdx.x; idx < kTile * DP; idx += kThreads) {
    const int r = idx / DP, t = idx % DP;
    const int64_t row = row0 + r;
    tile[r * kLd + t] = row < n && t < d ? factor * load(x + (bh * n + row) * d + t) : 0.0f;
  }
}

// acc[a][b] = A[ty + 16a] . B[tx + 16b] over DP columns.
template <int DP>
__device__ __forceinline__ void tile_dots(const float* A, const float* B, float acc[4][4]) {
  constexpr int kLd = Tiles<DP>::kLd;
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
#pragma unroll
  for (int a = 0; a < 4; ++a) {
#pragma unroll
    for (int b = 0; b < 4; ++b) acc[a][b] = 0.0f;
  }
#pragma unroll 8
  for (int t = 0; t < DP; ++t) {
    float av[4], bv[4];
#pragma unroll
    for (int a = 0; a < 4; ++a) av[a] = A[(ty + 16 * a) * kLd + t];
#pragma unroll
    for (int b = 0; b < 4; ++b) bv[b] = B[(tx + 16 * b) * kLd + t];
#pragma unroll
    for (int a = 0; a < 4; ++a) {
#pragma unroll
      for (int b = 0; b < 4; ++b) acc[a][b] = fmaf(av[a], bv[b], acc[a][b]);
    }
  }
}

// out[a][c] += sum_r W[r][row(a)] X[r][tx + 16c]  (transposed weights: key-centric products)
// or, with kTransposed false, sum_c W[row(a)][c] X[c][tx + 16c'] (query-centric products).
template <int DP, bool kTransposed>
__device__ __forceinline__ void tile_product(const float* W, const float* X,
                                             float out[4][DP / 16]) {
  constexpr int kLd = Tiles<DP>::kLd, kWl = kTile + 1;
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
#pragma unroll 4
  for (int r = 0; r < kTile; ++r) {
    float w[4], x[DP / 16];
#pragma unroll
    for (int a = 0; a < 4; ++a) {
      w[a] = kTransposed ? W[r * kWl + ty + 16 * a] : W[(ty + 16 * a) * kWl + r];
    }
#pragma unroll
    for (int c = 0; c < DP / 16; ++c) x[c] = X[r * kLd + tx + 16 * c];
#pragma unroll
    for (int a = 0; a < 4; ++a) {
#pragma unroll
      for (int c = 0; c < DP / 16; ++c) out[a][c] = fmaf(w[a], x[c], out[a][c]);
    }
  }
}

__device__ __forceinline__ bool tile_active(const uint32_t* mask, int64_t kt) {
  return (mask[kt >> 5] >> (kt & 31)) & 1u;
}

// Per-row state of a query tile (tiled path).
struct RowState {
  double lo[kTile], hi[kTile], t[kTile];
  float c[kTile], tau[kTile], norm[kTile], mean_g[kTile];
  int visible[kTile];
  int done[kTile];
};

// Key tiles a query tile [i0, i0 + 64) can see: keys i - W < j <= i.
__device__ __forceinline__ void key_tile_range(const DeviceParams& p, int64_t i0, int64_t& lo,
                                               int64_t& hi) {
  const int64_t first = i0 - p.window + 1;
  lo = first > 0 ? first / kTile : 0;
  hi = (imin(i0 + kTile, p.n) - 1) / kTile;
}

// z for row (ty + 16a), column (tx + 16b) of query tile i0 x key tile k0; -inf when invisible.
__device__ __forceinline__ void logits(const DeviceParams& p, const RowState& rs, int64_t i0,
                                       int64_t k0, double slope, const float raw[4][4],
                                       float z[4][4]) {
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
#pragma unroll
  for (int a = 0; a < 4; ++a) {
    const int64_t i = i0 + ty + 16 * a;
#pragma unroll
    for (int b = 0; b < 4; ++b) {
      const int64_t j = k0 + tx + 16 * b;
      const int64_t dist = i - j;
      const bool visible = i < p.n && dist >= 0 && dist < p.window;
      z[a][b] =
          visible ? rs.c[ty + 16 * a] * raw[a][b] - static_cast<float>(slope * dist) : -INFINITY;
    }
  }
}

template <typename T, int DP>
__global__ void __launch_bounds__(kThreads, 1)
    tiled_forward(DeviceParams p, const T* __restrict__ q, const T* __restrict__ k,
                  const T* __restrict__ v, T* __restrict__ out, float* __restrict__ stats,
                  uint32_t* __restrict__ mask_out, int mask_words) {
  extern __shared__ float smem[];
  using Sh = Tiles<DP>;
  float* Qs = smem;
  float* Ks = Qs + Sh::kTileFloats;
  float* Vs = Ks + Sh::kTileFloats;
  float* Ps = Vs + Sh::kTileFloats;
  __shared__ RowState rs;
  __shared__ uint32_t active[kMaskWords];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int64_t n = p.n, qt = gridDim.x - 1 - blockIdx.x, bh = blockIdx.y, i0 = qt * kTile;
  const int h = static_cast<int>(bh % p.heads);
  const Normaliser nm = normaliser_of(p, h);
  const double slope = p.alibi ? p.alibi[h] : 0.0;
  int64_t kt_lo, kt_hi;
  key_tile_range(p, i0, kt_lo, kt_hi);

  load_tile<T, DP>(Qs, q, bh, i0, n, p.d, p.scale);
  for (int w = tid; w < mask_words; w += kThreads) active[w] = 0;
  __syncthreads();
  for (int64_t kt = kt_lo + tid; kt <= kt_hi; kt += kThreads)
    atomicOr(&active[kt >> 5], 1u << (kt & 31));
  if (tid < kTile) {
    const int64_t i = i0 + tid;
    const int64_t vis = i < n ? imin(p.window, i + 1) : 1;
    rs.visible[tid] = static_cast<int>(vis);
    rs.c[tid] = i < n ? static_cast<float>(multiplier(p, bh, i, vis)) : 1.0f;
    rs.done[tid] = i < n ? 0 : 1;
  }
  __syncthreads();

  float raw[4][4], z[4][4];
  // Pass 1: the row maximum of z.
  float run_max[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
  for (int64_t kt = kt_lo; kt <= kt_hi; ++kt) {
    load_tile<T, DP>(Ks, k, bh, kt * kTile, n, p.d, 1.0f);
    __syncthreads();
    tile_dots<DP>(Qs, Ks, raw);
    logits(p, rs, i0, kt * kTile, slope, raw, z);
#pragma unroll
    for (int a = 0; a < 4; ++a) {
#pragma unroll
      for (int b = 0; b < 4; ++b) run_max[a] = fmaxf(run_max[a], z[a][b]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int a = 0; a < 4; ++a) {
    const float m = row_max(run_max[a]);
    if (tx == 0) {
      const int r = ty + 16 * a;
      if (rs.done[r]) {  // past n
        rs.t[r] = rs.lo[r] = rs.hi[r] = 0.0;
      } else if (nm.kind == 0) {
        rs.t[r] = m;
      } else {
        const double xmax = nm.am1_d * m;
        rs.lo[r] = xmax - 1.0;
        rs.hi[r] = xmax - pow(static_cast<double>(rs.visible[r]), -nm.am1_d);
      }
    }
  }
  __syncthreads();

  if (nm.kind != 0) {
    // Pass 2: f at kPoints evenly spaced points of every row's bracket; keeps the sub-interval
    // holding the root. Key tiles where no score exceeds the bracket's low end drop out.
    // Point m of row a: first[a] + step[a] * m (float, recomputed where used: fewer registers).
    float f[4][kPoints], first[4], step[4];
#pragma unroll
    for (int a = 0; a < 4; ++a) {
      const int r = ty + 16 * a;
      const double lo = rs.lo[r], hi = rs.hi[r];
      step[a] = static_cast<float>((hi - lo) / (kPoints + 1));
      first[a] = static_cast<float>(lo + (hi - lo) / (kPoints + 1));
#pragma unroll
      for (int m = 0; m < kPoints; ++m) f[a][m] = 0.0f;
    }
    for (int64_t kt = kt_lo; kt <= kt_hi; ++kt) {
      load_tile<T, DP>(Ks, k, bh, kt * kTile, n, p.d, 1.0f);
      __syncthreads();
      tile_dots<DP>(Qs, Ks, raw);
      logits(p, rs, i0, kt * kTile, slope, raw, z);
      int any = 0;
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        const float lo = static_cast<float>(rs.lo[ty + 16 * a]);
#pragma unroll
        for (int b = 0; b < 4; ++b) {
          const float x = nm.am1 * z[a][b];
          if (x > lo) {
            any = 1;
#pragma unroll
            for (int m = 0; m < kPoints; ++m) {
              const float y = x - fmaf(step[a], static_cast<float>(m), first[a]);
              if (y > 0.0f) f[a][m] += power(nm, y);
            }
          }
        }
      }
      if (!__syncthreads_or(any) && tid == 0) active[kt >> 5] &= ~(1u << (kt & 31));
    }
#pragma unroll
    for (int a = 0; a < 4; ++a) {
      float sums[kPoints];
#pragma unroll
      for (int m = 0; m < kPoints; ++m) sums[m] = row_sum(f[a][m]);
      const int r = ty + 16 * a;
      if (tx == 0 && !rs.done[r]) {
        const double lo = rs.lo[r], hi = rs.hi[r];
        int last = -1;  // the largest point with f >= 1
#pragma unroll
        for (int m = 0; m < kPoints; ++m) {
          if (sums[m] >= 1.0f) last = m;
        }
        // The bracket's ends are the float points f was evaluated at (static indices only:
        // a dynamic one would put arrays in local memory).
        double new_lo = lo, new_hi = hi;
#pragma unroll
        for (int m = 0; m < kPoints; ++m) {
          if (m == last) new_lo = fmaf(step[a], static_cast<float>(m), first[a]);
          if (m == last + 1) new_hi = fmaf(step[a], static_cast<float>(m), first[a]);
        }
        rs.lo[r] = new_lo;
        rs.hi[r] = new_hi;
        rs.t[r] = new_lo;  // Newton and Halley move monotonically from the left (f convex)
      }
    }
    __syncthreads();

    // Passes 3..: Halley (r >= 2) or Newton steps at t, kept inside the bracket.
    for (int pass = 0; pass < kMaxSolvePasses; ++pass) {
      double f0[4] = {0, 0, 0, 0}, f1[4] = {0, 0, 0, 0}, f2[4] = {0, 0, 0, 0};
      for (int64_t kt = kt_lo; kt <= kt_hi; ++kt) {
        if (!tile_active(active, kt)) continue;
        load_tile<T, DP>(Ks, k, bh, kt * kTile, n, p.d, 1.0f);
        __syncthreads();
        tile_dots<DP>(Qs, Ks, raw);
        logits(p, rs, i0, kt * kTile, slope, raw, z);
        int any = 0;
#pragma unroll
        for (int a = 0; a < 4; ++a) {
          const int r = ty + 16 * a;
          const double t = rs.t[r];
          const float lo = static_cast<float>(rs.lo[r]);
#pragma unroll
          for (int b = 0; b < 4; ++b) {
            const float x = nm.am1 * z[a][b];
            any |= x > lo;
            const double y = static_cast<double>(x) - t;
            if (y > 0.0) {
              if (nm.kind == 1) {
                f0[a] += y;
                f1[a] += 1.0;
              } else if (nm.kind == 2) {
                f0[a] += y * y;
                f1[a] += y;
                f2[a] += 1.0;
              } else {
                const double yr1 = pow(y, nm.r_d - 1.0);
                f0[a] += yr1 * y;
                f1[a] += yr1;
                if (nm.r_d >= 2.0) f2[a] += yr1 / y;
              }
            }
          }
        }
        if (!__syncthreads_or(any) && tid == 0) active[kt >> 5] &= ~(1u << (kt & 31));
      }
      int open = 0;
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        const double s0 = row_sum(f0[a]), s1 = row_sum(f1[a]), s2 = row_sum(f2[a]);
        const int r = ty + 16 * a;
        if (tx == 0 && !rs.done[r]) {
          const double t = rs.t[r], ff = s0 - 1.0;
          if (fabs(ff) < kSolveTolerance) {
            rs.done[r] = 1;
          } else {
            if (ff > 0) {
              rs.lo[r] = t;
            } else {
              rs.hi[r] = t;
            }
            const double df = -nm.r_d * s1;  // f'(t)
            double next;
            if (nm.r_d >= 2.0) {
              const double ddf = nm.r_d * (nm.r_d - 1.0) * s2;
              next = t - ff * df / (df * df - 0.5 * ff * ddf);
            } else {
              next = t - ff / df;
            }
            if (!(next > rs.lo[r] && next < rs.hi[r])) next = 0.5 * (rs.lo[r] + rs.hi[r]);
            if (next == t || rs.hi[r] - rs.lo[r] <= 1e-12 * fmax(1.0, fabs(t))) {
              rs.done[r] = 1;  // at the resolution of the scores
            } else {
              rs.t[r] = next;
              open = 1;
            }
          }
        }
      }
      if (!__syncthreads_or(open)) break;
    }
  }

  // Last pass: p = [x - tau]_+^r (or exp(z - max)), normalised; out = p V.
  if (tid < kTile) rs.tau[tid] = static_cast<float>(rs.t[tid]);
  __syncthreads();
  float acc[4][DP / 16];
  float norm[4] = {0, 0, 0, 0};
#pragma unroll
  for (int a = 0; a < 4; ++a) {
#pragma unroll
    for (int c = 0; c < DP / 16; ++c) acc[a][c] = 0.0f;
  }
  for (int64_t kt = kt_lo; kt <= kt_hi; ++kt) {
    if (!tile_active(active, kt)) continue;
    load_tile<T, DP>(Ks, k, bh, kt * kTile, n, p.d, 1.0f);
    load_tile<T, DP>(Vs, v, bh, kt * kTile, n, p.d, 1.0f);
    __syncthreads();
    tile_dots<DP>(Qs, Ks, raw);
    logits(p, rs, i0, kt * kTile, slope, raw, z);
    int any = 0;
#pragma unroll
    for (int a = 0; a < 4; ++a) {
      const int r = ty + 16 * a;
      const float tau = rs.tau[r];
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        float prob;
        if (nm.kind == 0) {
          prob = z[a][b] == -INFINITY ? 0.0f : __expf(z[a][b] - tau);
        } else {
          const float y = nm.am1 * z[a][b] - tau;
          prob = y > 0.0f ? power(nm, y) : 0.0f;
        }
        any |= prob > 0.0f;
        norm[a] += prob;
        Ps[r * (kTile + 1) + tx + 16 * b] = prob;
      }
    }
    if (!__syncthreads_or(any)) {
      if (tid == 0) active[kt >> 5] &= ~(1u << (kt & 31));
      continue;  // no support here: nothing to add (and nobody reads Ps before the next sync)
    }
    tile_product<DP, false>(Ps, Vs, acc);
    __syncthreads();
  }
#pragma unroll
  for (int a = 0; a < 4; ++a) {
    const float total = row_sum(norm[a]);
    const int r = ty + 16 * a;
    const int64_t i = i0 + r;
    if (i < n) {
      const float inv = 1.0f / total;
#pragma unroll
      for (int c = 0; c < DP / 16; ++c) {
        const int t = tx + 16 * c;
        if (t < p.d) store(out + (bh * n + i) * p.d + t, acc[a][c] * inv);
      }
      if (tx == 0) {
        float* st = stats + (bh * n + i) * 4;
        st[0] = rs.tau[r];
        st[1] = total;
        st[2] = rs.c[r];
        st[3] = 0.0f;
      }
    }
  }
  uint32_t* mask_row = mask_out + (bh * gridDim.x + qt) * mask_words;
  for (int w = tid; w < mask_words; w += kThreads) mask_row[w] = active[w];
}

// p (normalised) and the Jacobian weight s of one logit (tiled path, saved tau and norm).
__device__ __forceinline__ float probability(const Normaliser& nm, float z, float tau, float norm) {
  if (nm.kind == 0) return z == -INFINITY ? 0.0f : __expf(z - tau) / norm;
  const float y = nm.am1 * z - tau;
  return y > 0.0f ? power(nm, y) / norm : 0.0f;
}

// Query-centric backward: dq, the row sums, d alpha and d c per row, mean_g for the key pass.
template <typename T, int DP>
__global__ void __launch_bounds__(kThreads)
    tiled_backward_queries(DeviceParams p, const T* __restrict__ q, const T* __restrict__ k,
                           const T* __restrict__ v, const T* __restrict__ grad_out,
                           float* __restrict__ stats, const uint32_t* __restrict__ mask,
                           int mask_words, T* __restrict__ grad_q, double* __restrict__ row_grads) {
  extern __shared__ float smem[];
  using Sh = Tiles<DP>;
  float* Qs = smem;
  float* Gs = Qs + Sh::kTileFloats;  // grad_out rows
  float* Ks = Gs + Sh::kTileFloats;
  float* Vs = Ks + Sh::kTileFloats;
  float* SGs = Vs + Sh::kTileFloats;
  float* Ss = SGs + Sh::kProbFloats;
  __shared__ RowState rs;
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int64_t n = p.n, qt = gridDim.x - 1 - blockIdx.x, bh = blockIdx.y, i0 = qt * kTile;
  const int h = static_cast<int>(bh % p.heads);
  const Normaliser nm = normaliser_of(p, h);
  const double slope = p.alibi ? p.alibi[h] : 0.0;
  const uint32_t* active = mask + (bh * gridDim.x + qt) * mask_words;
  int64_t kt_lo, kt_hi;
  key_tile_range(p, i0, kt_lo, kt_hi);
  load_tile<T, DP>(Qs, q, bh, i0, n, p.d, p.scale);
  load_tile<T, DP>(Gs, grad_out, bh, i0, n, p.d, 1.0f);
  if (tid < kTile) {
    const int64_t i = i0 + tid;
    const bool valid = i < n;
    const float* st = stats + (bh * n + (valid ? i : 0)) * 4;
    rs.tau[tid] = valid ? st[0] : 0.0f;
    rs.norm[tid] = valid ? st[1] : 1.0f;
    rs.c[tid] = valid ? st[2] : 1.0f;
    rs.visible[tid] = valid ? static_cast<int>(imin(p.window, i + 1)) : 1;
  }
  __syncthreads();
  // Row sums: s, s g, s z, p log p, g s z, g p log p, s g raw, s raw.
  float sums[8][4];
#pragma unroll
  for (int u = 0; u < 8; ++u) {
#pragma unroll
    for (int a = 0; a < 4; ++a) sums[u][a] = 0.0f;
  }
  float acc_sg[4][DP / 16], acc_s[4][DP / 16];
#pragma unroll
  for (int a = 0; a < 4; ++a) {
#pragma unroll
    for (int c = 0; c < DP / 16; ++c) acc_sg[a][c] = acc_s[a][c] = 0.0f;
  }
  float raw[4][4], z[4][4], g[4][4];
  for (int64_t kt = kt_lo; kt <= kt_hi; ++kt) {
    if (!tile_active(active, kt)) continue;
    load_tile<T, DP>(Ks, k, bh, kt * kTile, n, p.d, 1.0f);
    load_tile<T, DP>(Vs, v, bh, kt * kTile, n, p.d, 1.0f);
    __syncthreads();
    tile_dots<DP>(Qs, Ks, raw);
    tile_dots<DP>(Gs, Vs, g);
    logits(p, rs, i0, kt * kTile, slope, raw, z);
#pragma unroll
    for (int a = 0; a < 4; ++a) {
      const int r = ty + 16 * a;
      const float tau = rs.tau[r], norm = rs.norm[r];
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        const float prob = probability(nm, z[a][b], tau, norm);
        float s = 0.0f;
        if (prob > 0.0f) {
          s = jacobian_weight(nm, prob);
          const float plogp = prob * __logf(prob);
          sums[0][a] += s;
          sums[1][a] += s * g[a][b];
          sums[2][a] += s * z[a][b];
          sums[3][a] += plogp;
          sums[4][a] += g[a][b] * s * z[a][b];
          sums[5][a] += g[a][b] * plogp;
          sums[6][a] += s * g[a][b] * raw[a][b];
          sums[7][a] += s * raw[a][b];
        }
        SGs[r * (kTile + 1) + tx + 16 * b] = s * g[a][b];
        Ss[r * (kTile + 1) + tx + 16 * b] = s;
      }
    }
    __syncthreads();
    tile_product<DP, false>(SGs, Ks, acc_sg);
    tile_product<DP, false>(Ss, Ks, acc_s);
    __syncthreads();
  }
#pragma unroll
  for (int a = 0; a < 4; ++a) {
    float total[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) total[u] = row_sum(sums[u][a]);
    const int r = ty + 16 * a;
    const int64_t i = i0 + r;
    const float mean_g = total[1] / total[0];
    if (i < n) {
      const float coef = rs.c[r] * p.scale;
#pragma unroll
      for (int c = 0; c < DP / 16; ++c) {
        const int t = tx + 16 * c;
        if (t < p.d) {
          store(grad_q + (bh * n + i) * p.d + t, coef * (acc_sg[a][c] - mean_g * acc_s[a][c]));
        }
      }
      if (tx == 0) {
        stats[(bh * n + i) * 4 + 3] = mean_g;
        double dalpha = 0;
        if (nm.kind != 0) {
          const double tau_prime = (double(total[2]) - total[3]) / total[0];
          dalpha = (double(total[4]) - tau_prime * total[1] - total[5]) / nm.am1_d;
        }
        const double dc = double(total[6]) - double(mean_g) * total[7];
        write_row_grads(p, row_grads, bh, i, rs.visible[r], dalpha, dc);
      }
    }
  }
}

// Key-centric backward: dk and dv of a key tile from the query tiles that see it.
template <typename T, int DP>
__global__ void __launch_bounds__(kThreads)
    tiled_backward_keys(DeviceParams p, const T* __restrict__ q, const T* __restrict__ k,
                        const T* __restrict__ v, const T* __restrict__ grad_out,
                        const float* __restrict__ stats, const uint32_t* __restrict__ mask,
                        int mask_words, T* __restrict__ grad_k, T* __restrict__ grad_v) {
  extern __shared__ float smem[];
  using Sh = Tiles<DP>;
  float* Ks = smem;
  float* Vs = Ks + Sh::kTileFloats;
  float* Qs = Vs + Sh::kTileFloats;
  float* Gs = Qs + Sh::kTileFloats;
  float* Ps = Gs + Sh::kTileFloats;
  float* Zs = Ps + Sh::kProbFloats;
  __shared__ RowState rs;
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int64_t n = p.n, kt = gridDim.x - 1 - blockIdx.x, bh = blockIdx.y, k0 = kt * kTile;
  const int64_t query_tiles = gridDim.x;
  const int h = static_cast<int>(bh % p.heads);
  const Normaliser nm = normaliser_of(p, h);
  const double slope = p.alibi ? p.alibi[h] : 0.0;
  load_tile<T, DP>(Ks, k, bh, k0, n, p.d, 1.0f);
  load_tile<T, DP>(Vs, v, bh, k0, n, p.d, 1.0f);
  float acc_k[4][DP / 16], acc_v[4][DP / 16];
#pragma unroll
  for (int a = 0; a < 4; ++a) {
#pragma unroll
    for (int c = 0; c < DP / 16; ++c) acc_k[a][c] = acc_v[a][c] = 0.0f;
  }
  // Queries that see key j: j <= i < j + W.
  const int64_t last_query = imin(n - 1, k0 + kTile - 1 + p.window - 1);
  const int64_t qt_hi = last_query / kTile;
  float raw[4][4], z[4][4], g[4][4];
  for (int64_t qt = kt; qt <= qt_hi && qt < query_tiles; ++qt) {
    if (!tile_active(mask + (bh * query_tiles + qt) * mask_words, kt)) continue;
    const int64_t i0 = qt * kTile;
    __syncthreads();  // the previous tile's readers are done with Qs, Gs and rs
    load_tile<T, DP>(Qs, q, bh, i0, n, p.d, p.scale);
    load_tile<T, DP>(Gs, grad_out, bh, i0, n, p.d, 1.0f);
    if (tid < kTile) {
      const int64_t i = i0 + tid;
      const bool valid = i < n;
      const float* st = stats + (bh * n + (valid ? i : 0)) * 4;
      rs.tau[tid] = valid ? st[0] : 0.0f;
      rs.norm[tid] = valid ? st[1] : 1.0f;
      rs.c[tid] = valid ? st[2] : 1.0f;
      rs.mean_g[tid] = valid ? st[3] : 0.0f;
    }
    __syncthreads();
    tile_dots<DP>(Qs, Ks, raw);
    tile_dots<DP>(Gs, Vs, g);
    logits(p, rs, i0, k0, slope, raw, z);
#pragma unroll
    for (int a = 0; a < 4; ++a) {
      const int r = ty + 16 * a;
      const float tau = rs.tau[r], norm = rs.norm[r], mean_g = rs.mean_g[r], c = rs.c[r];
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        const float prob = probability(nm, z[a][b], tau, norm);
        const float dz = prob > 0.0f ? jacobian_weight(nm, prob) * (g[a][b] - mean_g) : 0.0f;
        Ps[r * (kTile + 1) + tx + 16 * b] = prob;
        Zs[r * (kTile + 1) + tx + 16 * b] = dz * c;  // Qs holds scale * q
      }
    }
    __syncthreads();
    tile_product<DP, true>(Ps, Gs, acc_v);
    tile_product<DP, true>(Zs, Qs, acc_k);
  }
#pragma unroll
  for (int a = 0; a < 4; ++a) {
    const int64_t j = k0 + ty + 16 * a;
    if (j >= n) continue;
#pragma unroll
    for (int c = 0; c < DP / 16; ++c) {
      const int t = tx + 16 * c;
      if (t < p.d) {
        store(grad_k + (bh * n + j) * p.d + t, acc_k[a][c]);
        store(grad_v + (bh * n + j) * p.d + t, acc_v[a][c]);
      }
    }
  }
}

// ------------------------------------------------------------------------------------------
// Row path: a warp per query; the row's S scores (scale * q . k) and probabilities live in
// shared memory, [kRowWarps][S] floats each.

__device__ __forceinline__ int64_t slot_key(const DeviceParams& p, int64_t i, int slot) {
  return slot < p.window_slots ? i - slot : i - p.offset[slot - p.window_slots];
}

// Shared floats per warp: forward raw[S], prob[S], the staged query; backward also g[S] and
// the staged grad_out row.
__host__ __device__ constexpr int row_forward_floats(int slots) {
  return 2 * slots + kEntmaxMaxHeadDim;
}
__host__ __device__ constexpr int row_backward_floats(int slots) {
  return 3 * slots + 2 * kEntmaxMaxHeadDim;
}

__device__ __forceinline__ int64_t row_visible(const DeviceParams& p, int64_t i) {
  int64_t count = imin(p.window_slots, i + 1);
  for (int o = 0; o < p.offsets; ++o) count += p.offset[o] <= i;
  return count;
}

// dot(row, x) of one key (or value) row against a row staged in shared memory, by one lane:
// each lane owns whole slots, so a slot costs no shuffles (the staged row is read as a
// broadcast). `vec`: the rows are 16-byte aligned and d a multiple of 16 bytes' elements, so
// they are read 16 bytes at a time.
__device__ __forceinline__ float lane_dot(const float* staged, const float* x, int d, bool vec) {
  float acc = 0.0f;
  if (vec) {
    for (int t = 0; t < d; t += 4) {
      const float4 u = *reinterpret_cast<const float4*>(x + t);
      acc = fmaf(staged[t], u.x, acc);
      acc = fmaf(staged[t + 1], u.y, acc);
      acc = fmaf(staged[t + 2], u.z, acc);
      acc = fmaf(staged[t + 3], u.w, acc);
    }
    return acc;
  }
  for (int t = 0; t < d; ++t) acc = fmaf(staged[t], x[t], acc);
  return acc;
}

__device__ __forceinline__ float lane_dot(const float* staged, const __nv_bfloat16* x, int d,
                                          bool vec) {
  float acc = 0.0f;
  if (vec) {
    for (int t = 0; t < d; t += 8) {
      const uint4 u = *reinterpret_cast<const uint4*>(x + t);
      const unsigned words[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        // bf16 -> float is a 16-bit shift.
        acc = fmaf(staged[t + 2 * w], __uint_as_float(words[w] << 16), acc);
        acc = fmaf(staged[t + 2 * w + 1], __uint_as_float(words[w] & 0xffff0000u), acc);
      }
    }
    return acc;
  }
  for (int t = 0; t < d; ++t) acc = fmaf(staged[t], __bfloat162float(x[t]), acc);
  return acc;
}

// Stages row x (d elements, times `factor`) into the warp's shared row `staged`.
template <typename T>
__device__ __forceinline__ void stage_row(float* staged, const T* x, int d, float factor) {
  const int lane = threadIdx.x & 31;
  for (int t = lane; t < d; t += 32) staged[t] = factor * load(x + t);
  __syncwarp();
}

// Scores raw[slot] of query row (bh, i) (NaN for invisible slots), then p[slot] (0 when
// invisible or outside the support); returns c_i. All lanes of the warp call it; qs is the
// warp's staging row (kEntmaxMaxHeadDim floats of shared memory).
template <typename T>
__device__ double row_probabilities(const DeviceParams& p, const Normaliser& nm, const T* q,
                                    const T* k, int64_t bh, int64_t i, float* raw, float* prob,
                                    float* qs, double slope, int64_t visible) {
  const int lane = threadIdx.x & 31;
  stage_row(qs, q + (bh * p.n + i) * p.d, p.d, p.scale);
  for (int s = lane; s < p.slots; s += 32) {
    const int64_t key = slot_key(p, i, s);
    raw[s] = key < 0 ? NAN : lane_dot(qs, k + (bh * p.n + key) * p.d, p.d, p.vec);
  }
  __syncwarp();
  const double c = multiplier(p, bh, i, visible);
  // z = c raw - slope * distance; x = (a - 1) z.
  auto logit = [&](int s) -> double {
    const int64_t key = slot_key(p, i, s);
    return c * raw[s] - slope * static_cast<double>(i - key);
  };
  double zmax = -INFINITY;
  for (int s = lane; s < p.slots; s += 32) {
    if (!isnan(raw[s])) zmax = fmax(zmax, logit(s));
  }
  for (int o = 16; o > 0; o >>= 1) zmax = fmax(zmax, __shfl_xor_sync(0xffffffffu, zmax, o));
  zmax = __shfl_sync(0xffffffffu, zmax, 0);
  if (nm.kind == 0) {
    double total = 0;
    for (int s = lane; s < p.slots; s += 32) {
      const double e = isnan(raw[s]) ? 0.0 : exp(logit(s) - zmax);
      prob[s] = static_cast<float>(e);
      total += e;
    }
    total = warp_sum(total);
    for (int s = lane; s < p.slots; s += 32) {
      prob[s] = isnan(raw[s]) ? 0.0f : static_cast<float>(prob[s] / total);  // (see below)
    }
    __syncwarp();
    return c;
  }
  // tau solves f(tau) = sum [x - tau]_+^r - 1 = 0, in float64. f is convex and decreasing, so
  // Newton's method from a point left of the root (xmax - 1, where f >= 0) climbs monotonically
  // to it, without overshooting; a step that leaves the bracket [lo, hi] (rounding, or a NaN
  // parameter) is replaced by the bracket's midpoint, and the bracket shrinks at every pass.
  // A pass is one sweep over the row's S slots in shared memory: 2-7 passes where bisection to
  // machine precision took ~50 (scripts/newton_threshold_model.py: same p to 1e-14).
  const double xmax = nm.am1_d * zmax;
  double lo = xmax - 1.0, hi = xmax - pow(static_cast<double>(visible), -nm.am1_d);
  double tau = lo;
  for (int pass = 0; pass < kMaxNewtonPasses; ++pass) {
    double f = 0, df = 0;
    for (int s = lane; s < p.slots; s += 32) {
      if (isnan(raw[s])) continue;
      const double y = nm.am1_d * logit(s) - tau;
      if (y <= 0) continue;
      if (nm.kind == 1) {
        f += y;
        df += 1.0;
      } else if (nm.kind == 2) {
        f += y * y;
        df += 2.0 * y;
      } else {
        const double y_r1 = pow(y, nm.r_d - 1.0);
        f += y_r1 * y;
        df += nm.r_d * y_r1;
      }
    }
    f = warp_sum(f) - 1.0;
    df = warp_sum(df);
    if (f >= 0) {
      lo = tau;
    } else {
      hi = tau;
    }
    if (f == 0) break;
    double next = tau + f / df;
    // Converged: the step is below float64 resolution. (Tested before the safeguard: such a
    // step can land on the bracket's end by rounding, and must not send tau to the midpoint.)
    if (fabs(next - tau) <= 1e-15 * fmax(1.0, fabs(tau))) {
      tau = next;
      break;
    }
    if (!(next > lo && next < hi)) next = 0.5 * (lo + hi);
    tau = next;
    if (!(lo < hi)) break;
  }
  double total = 0;
  for (int s = lane; s < p.slots; s += 32) {
    double e = 0;
    if (!isnan(raw[s])) {
      const double y = nm.am1_d * logit(s) - tau;
      if (y > 0) e = nm.kind == 1 ? y : (nm.kind == 2 ? y * y : pow(y, nm.r_d));
    }
    prob[s] = static_cast<float>(e);
    total += e;
  }
  total = warp_sum(total);
  // Invisible slots stay exactly 0 even when a NaN parameter (ops/entmax_attention_cuda.cpp
  // turns invalid device values into NaN) makes the total NaN: the loops over slots with p != 0
  // must never read their (negative) keys.
  for (int s = lane; s < p.slots; s += 32) {
    prob[s] = isnan(raw[s]) ? 0.0f : static_cast<float>(prob[s] / total);
  }
  __syncwarp();
  return c;
}

template <typename T>
__global__ void __launch_bounds__(kRowWarps * 32)
    row_forward(DeviceParams p, const T* __restrict__ q, const T* __restrict__ k,
                const T* __restrict__ v, T* __restrict__ out) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t row = int64_t{blockIdx.x} * kRowWarps + warp;
  if (row >= p.batch_heads * p.n) return;  // warp-uniform; no block-wide sync below
  const int64_t bh = row / p.n, i = row % p.n;
  float* raw = smem + warp * row_forward_floats(p.slots);
  float* prob = raw + p.slots;
  float* qs = prob + p.slots;
  const int h = static_cast<int>(bh % p.heads);
  const Normaliser nm = normaliser_of(p, h);
  const double slope = p.alibi ? p.alibi[h] : 0.0;
  row_probabilities(p, nm, q, k, bh, i, raw, prob, qs, slope, row_visible(p, i));
  float acc[kEntmaxMaxHeadDim / 32] = {0, 0, 0, 0};
  for (int s = 0; s < p.slots; ++s) {
    const float ps = prob[s];
    if (ps == 0.0f) continue;  // exact zeros (and invisible slots) skipped
    const T* vj = v + (bh * p.n + slot_key(p, i, s)) * p.d;
#pragma unroll
    for (int c = 0; c < kEntmaxMaxHeadDim / 32; ++c) {
      const int t = lane + 32 * c;
      if (t < p.d) acc[c] = fmaf(ps, load(vj + t), acc[c]);
    }
  }
#pragma unroll
  for (int c = 0; c < kEntmaxMaxHeadDim / 32; ++c) {
    const int t = lane + 32 * c;
    if (t < p.d) store(out + row * p.d + t, acc[c]);
  }
}

// Backward, query side: dq, per-row gradients, and per slot p and dz * c * scale into the
// workspace, indexed by key row: slot s of query i goes to [bh, key(i, s), s], so the key
// kernel reads a key's S slots contiguously (the map i -> key(i, s) is one-to-one per slot).
// (Six blocks per SM as a launch bound: without it ptxas spills around the float64 pow calls.)
template <typename T>
__global__ void __launch_bounds__(kRowWarps * 32, 6)
    row_backward_queries(DeviceParams p, const T* __restrict__ q, const T* __restrict__ k,
                         const T* __restrict__ v, const T* __restrict__ grad_out,
                         T* __restrict__ grad_q, float2* __restrict__ slots_out,
                         double* __restrict__ row_grads) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t row = int64_t{blockIdx.x} * kRowWarps + warp;
  if (row >= p.batch_heads * p.n) return;
  const int64_t bh = row / p.n, i = row % p.n;
  float* raw = smem + warp * row_backward_floats(p.slots);
  float* prob = raw + p.slots;
  float* gs = prob + p.slots;
  float* qs = gs + p.slots;
  float* gos = qs + kEntmaxMaxHeadDim;
  const int h = static_cast<int>(bh % p.heads);
  const Normaliser nm = normaliser_of(p, h);
  const double slope = p.alibi ? p.alibi[h] : 0.0;
  const int64_t visible = row_visible(p, i);
  const double c = row_probabilities(p, nm, q, k, bh, i, raw, prob, qs, slope, visible);
  // g_j = grad_out . v_j on the support, a lane per slot.
  stage_row(gos, grad_out + row * p.d, p.d, 1.0f);
  for (int s = lane; s < p.slots; s += 32) {
    gs[s] = prob[s] == 0.0f ? 0.0f
                            : lane_dot(gos, v + (bh * p.n + slot_key(p, i, s)) * p.d, p.d, p.vec);
  }
  __syncwarp();
  double sum_s = 0, sum_sg = 0, sum_sz = 0, sum_plogp = 0, sum_gsz = 0, sum_gplogp = 0,
         sum_sgraw = 0, sum_sraw = 0;
  for (int s = lane; s < p.slots; s += 32) {
    const float ps = prob[s];
    if (ps == 0.0f) continue;
    const double pj = ps, g = gs[s], r = raw[s];
    const double z = c * r - slope * static_cast<double>(i - slot_key(p, i, s));
    const double w = nm.kind == 0 ? pj : (nm.kind == 1 ? 1.0 : pow(pj, 2.0 - nm.alpha));
    const double plogp = pj * log(pj);
    sum_s += w;
    sum_sg += w * g;
    sum_sz += w * z;
    sum_plogp += plogp;
    sum_gsz += g * w * z;
    sum_gplogp += g * plogp;
    sum_sgraw += w * g * r;
    sum_sraw += w * r;
  }
  sum_s = warp_sum(sum_s);
  sum_sg = warp_sum(sum_sg);
  sum_sz = warp_sum(sum_sz);
  sum_plogp = warp_sum(sum_plogp);
  sum_gsz = warp_sum(sum_gsz);
  sum_gplogp = warp_sum(sum_gplogp);
  sum_sgraw = warp_sum(sum_sgraw);
  sum_sraw = warp_sum(sum_sraw);
  const double mean_g = sum_sg / sum_s;
  const float coef = static_cast<float>(c * p.scale);
  // dz * c * scale per slot (a lane per slot, into gs), written to the workspace by key row.
  for (int s = lane; s < p.slots; s += 32) {
    const float ps = prob[s];
    float dzc = 0.0f;
    if (ps != 0.0f) {
      const double w = nm.kind == 0 ? ps : (nm.kind == 1 ? 1.0 : pow(double(ps), 2.0 - nm.alpha));
      dzc = static_cast<float>(w * (gs[s] - mean_g)) * coef;
    }
    gs[s] = dzc;
    const int64_t key = slot_key(p, i, s);
    if (key >= 0) slots_out[(bh * p.n + key) * p.slots + s] = make_float2(ps, dzc);
  }
  __syncwarp();
  float dq[kEntmaxMaxHeadDim / 32] = {0, 0, 0, 0};
  for (int s = 0; s < p.slots; ++s) {
    const float dzc = gs[s];
    if (dzc == 0.0f) continue;  // warp-uniform (shared memory)
    const T* kj = k + (bh * p.n + slot_key(p, i, s)) * p.d;
#pragma unroll
    for (int u = 0; u < kEntmaxMaxHeadDim / 32; ++u) {
      const int t = lane + 32 * u;
      if (t < p.d) dq[u] = fmaf(dzc, load(kj + t), dq[u]);
    }
  }
#pragma unroll
  for (int u = 0; u < kEntmaxMaxHeadDim / 32; ++u) {
    const int t = lane + 32 * u;
    if (t < p.d) store(grad_q + row * p.d + t, dq[u]);
  }
  if (lane == 0) {
    double dalpha = 0;
    if (nm.kind != 0) {
      const double tau_prime = (sum_sz - sum_plogp) / sum_s;
      dalpha = (sum_gsz - tau_prime * sum_sg - sum_gplogp) / nm.am1_d;
    }
    write_row_grads(p, row_grads, bh, i, visible, dalpha, sum_sgraw - mean_g * sum_sraw);
  }
}

// Backward, key side: key j of head bh gathers dv = sum p grad_out_i and dk = sum dz c scale q_i
// over the (query, slot) pairs (i = j + distance(slot), slot) that saw it. Its S workspace
// entries are contiguous: the lanes read 32 at a time and pass them round by shuffles.
template <typename T>
__global__ void __launch_bounds__(kRowWarps * 32)
    row_backward_keys(DeviceParams p, const T* __restrict__ q, const T* __restrict__ grad_out,
                      const float2* __restrict__ slots_in, T* __restrict__ grad_k,
                      T* __restrict__ grad_v) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t row = int64_t{blockIdx.x} * kRowWarps + warp;
  if (row >= p.batch_heads * p.n) return;
  const int64_t bh = row / p.n, j = row % p.n;
  float dk[kEntmaxMaxHeadDim / 32] = {0, 0, 0, 0}, dv[kEntmaxMaxHeadDim / 32] = {0, 0, 0, 0};
  const float2* mine = slots_in + row * p.slots;
  for (int base = 0; base < p.slots; base += 32) {
    const int s = base + lane;
    float2 w = make_float2(0.0f, 0.0f);
    if (s < p.slots) {
      const int64_t i = j + (s < p.window_slots ? s : p.offset[s - p.window_slots]);
      if (i < p.n) w = mine[s];
    }
    const int count = p.slots - base < 32 ? p.slots - base : 32;
    for (int l = 0; l < count; ++l) {
      const float wp = __shfl_sync(0xffffffffu, w.x, l);
      const float wz = __shfl_sync(0xffffffffu, w.y, l);
      if (wp == 0.0f && wz == 0.0f) continue;  // warp-uniform
      const int sl = base + l;
      const int64_t i = j + (sl < p.window_slots ? sl : p.offset[sl - p.window_slots]);
      const T* qi = q + (bh * p.n + i) * p.d;
      const T* go = grad_out + (bh * p.n + i) * p.d;
#pragma unroll
      for (int u = 0; u < kEntmaxMaxHeadDim / 32; ++u) {
        const int t = lane + 32 * u;
        if (t < p.d) {
          dv[u] = fmaf(wp, load(go + t), dv[u]);
          dk[u] = fmaf(wz, load(qi + t), dk[u]);
        }
      }
    }
  }
#pragma unroll
  for (int u = 0; u < kEntmaxMaxHeadDim / 32; ++u) {
    const int t = lane + 32 * u;
    if (t < p.d) {
      store(grad_k + row * p.d + t, dk[u]);
      store(grad_v + row * p.d + t, dv[u]);
    }
  }
}

// ------------------------------------------------------------------------------------------
// Tensor-core path (bf16, dense causal, head_dim 64 or 128, entmax with alpha in (1, 2]).
// A block of 128 threads owns 64 query rows (forward, query backward) or 64 keys (key
// backward); warp w owns rows 16 w .. 16 w + 15. Scores are mma.sync m16n8k16 bf16 products
// with fp32 accumulation (exact bf16 products, as the CUDA-core path's float32 dots), K/V (or
// Q/dO) tiles stream through shared memory double-buffered by cp.async. Accumulator layout:
// lane = 4 g + c holds rows g and g + 8 of its warp's 16, columns 8 t + 2 c + {0, 1} of n8
// tile t; the 4 lanes of a quad share a row, so per-row state lives in registers (identical
// in the quad's lanes) and row reductions are two shuffles. Saved state (tau, norm, c, mean_g
// per row, the support bit per query tile x key tile) is the CUDA-core path's, bit for bit in
// layout, so either backward can follow either forward.
namespace tcp {

using bf16 = __nv_bfloat16;
// The PTX wrappers and bf16 helpers of the dilated tensor-core kernels, shared.
using tc::bf16_hi;
using tc::bf16_lo;
using tc::cp_async16;
using tc::cp_async_commit;
using tc::cp_async_wait;
using tc::ldmatrix_x4;
using tc::ldmatrix_x4_trans;
using tc::mma;
using tc::pack_bf16;
using tc::quad_max;
using tc::smem_u32;

constexpr int kThreadsTc = 128;
// P, dS rounded to bf16 in the P V, dS K, P^T dO, dS^T Q products (one mma each, FlashAttention's
// choice: one more bf16 rounding per probability, inside the harness's bf16 rule); true makes
// them bf16 hi + lo pairs (two mmas each) whose products keep fp32-like accuracy.
constexpr bool kSplitForward = false;
constexpr bool kSplitBackward = false;

template <int D>
struct Shape {
  static constexpr int kStride = D + 8;  // bf16 per smem row: +16 B keeps ldmatrix conflict-free
  static constexpr int kTileElems = kTile * kStride;
  static constexpr int kChunks = D / 8;   // 16-byte chunks per row
  static constexpr int kKSteps = D / 16;  // k16 steps over head_dim
  static constexpr int kNTiles = D / 8;   // n8 tiles over head_dim
  // A warp's 16 rows of Q / dO / K / V stay in registers as A fragments for d = 64; d = 128
  // reloads them from shared memory (registers).
  static constexpr bool kHold = D == 64;
  static constexpr int kHeld = kHold ? kKSteps : 1;
};

// Two accumulator n8 tiles (16 x 16 fp32) as an A fragment: bf16 hi and (kSplit) lo parts.
template <bool kSplit>
__device__ __forceinline__ void to_a_fragment(const float (&x0)[4], const float (&x1)[4],
                                              uint32_t (&hi)[4], uint32_t (&lo)[4]) {
  const float val[8] = {x0[0], x0[1], x0[2], x0[3], x1[0], x1[1], x1[2], x1[3]};
#pragma unroll
  for (int t = 0; t < 4; ++t) {
    hi[t] = pack_bf16(val[2 * t], val[2 * t + 1]);
    lo[t] = kSplit ? pack_bf16(val[2 * t] - bf16_lo(hi[t]), val[2 * t + 1] - bf16_hi(hi[t])) : 0u;
  }
}

template <typename T>
__device__ __forceinline__ T quad_sum(T x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Rows [row0, row0 + 64) of a [n, D] matrix into a padded smem tile (zeros past n), async.
template <int D>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src, int row0, int n) {
  using S = Shape<D>;
#pragma unroll
  for (int it = 0; it < kTile * S::kChunks / kThreadsTc; ++it) {
    const int idx = it * kThreadsTc + static_cast<int>(threadIdx.x);
    const int r = idx / S::kChunks, ch = idx % S::kChunks;
    const int row = row0 + r;
    const bool valid = row < n;
    cp_async16(dst + r * S::kStride + ch * 8,
               src + static_cast<size_t>(valid ? row : 0) * D + ch * 8, valid);
  }
}

template <int D>
__device__ __forceinline__ const bf16* a_address(const bf16* tile, int wrow, int ks, int lane) {
  return tile + (wrow + (lane & 7) + ((lane >> 3) & 1) * 8) * Shape<D>::kStride + ks * 16 +
         (lane >> 4) * 8;
}

template <int D>
__device__ __forceinline__ void hold_fragments(uint32_t (&held)[Shape<D>::kHeld][4],
                                               const bf16* tile, int wrow, int lane) {
  if constexpr (Shape<D>::kHold) {
#pragma unroll
    for (int ks = 0; ks < Shape<D>::kKSteps; ++ks) {
      ldmatrix_x4(held[ks], a_address<D>(tile, wrow, ks, lane));
    }
  }
}

template <int D>
__device__ __forceinline__ void a_fragment(uint32_t (&dst)[4],
                                           const uint32_t (&held)[Shape<D>::kHeld][4],
                                           const bf16* tile, int wrow, int ks, int lane) {
  if constexpr (Shape<D>::kHold) {
#pragma unroll
    for (int t = 0; t < 4; ++t) dst[t] = held[ks][t];
  } else {
    ldmatrix_x4(dst, a_address<D>(tile, wrow, ks, lane));
  }
}

// x (16 x 16) = A B^T for a warp: A its 16 rows (held or at wrow of a_tile), B rows
// block .. block + 15 of b_tile. x[h] holds columns block + 8 h + 2 c + {0, 1}.
template <int D>
__device__ __forceinline__ void score16(float (&x)[2][4],
                                        const uint32_t (&held)[Shape<D>::kHeld][4],
                                        const bf16* a_tile, int wrow, const bf16* b_tile, int block,
                                        int lane) {
  using S = Shape<D>;
  x[0][0] = x[0][1] = x[0][2] = x[0][3] = x[1][0] = x[1][1] = x[1][2] = x[1][3] = 0.0f;
#pragma unroll
  for (int ks = 0; ks < S::kKSteps; ++ks) {
    uint32_t a[4], b[4];
    a_fragment<D>(a, held, a_tile, wrow, ks, lane);
    ldmatrix_x4(b, b_tile + (block + (lane & 7) + (lane >> 4) * 8) * S::kStride + ks * 16 +
                       ((lane >> 3) & 1) * 8);
    mma(x[0], a, b[0], b[1]);
    mma(x[1], a, b[2], b[3]);
  }
}

// acc (16 x D) += X B: X a 16 x 16 block as A fragments (hi, and lo when kSplit), B rows
// block .. block + 15 of an smem tile (ldmatrix .trans).
template <int D, bool kSplit>
__device__ __forceinline__ void accumulate16(float (&acc)[Shape<D>::kNTiles][4],
                                             const uint32_t (&hi)[4], const uint32_t (&lo)[4],
                                             const bf16* tile, int block, int lane) {
#pragma unroll
  for (int nd = 0; nd < D / 16; ++nd) {
    uint32_t b[4];
    ldmatrix_x4_trans(b, tile + (block + (lane & 7) + ((lane >> 3) & 1) * 8) * Shape<D>::kStride +
                             nd * 16 + (lane >> 4) * 8);
    mma(acc[2 * nd], hi, b[0], b[1]);
    mma(acc[2 * nd + 1], hi, b[2], b[3]);
    if constexpr (kSplit) {
      mma(acc[2 * nd], lo, b[0], b[1]);
      mma(acc[2 * nd + 1], lo, b[2], b[3]);
    }
  }
}

template <int N>
__device__ __forceinline__ void zero(float (&x)[N][4]) {
#pragma unroll
  for (int t = 0; t < N; ++t) x[t][0] = x[t][1] = x[t][2] = x[t][3] = 0.0f;
}

// The first set bit >= from in a shared tile mask, or last + 1 (bits past last are zero).
__device__ __forceinline__ int next_tile(const uint32_t* bits, int from, int last) {
  while (from <= last) {
    const uint32_t w = bits[from >> 5] >> (from & 31);
    if (w) return min(from + __ffs(w) - 1, last + 1);
    from = (from | 31) + 1;
  }
  return last + 1;
}

// x = (a - 1) z, z = c scale (q . k) - slope (i - j), for a visible key; the same expression
// in every kernel so that the forward's support and the backward's agree bit for bit.
__device__ __forceinline__ float logit_x(const Normaliser& nm, float zc, float slope, float dot,
                                         int dist) {
  return nm.am1 * fmaf(zc, dot, -slope * static_cast<float>(dist));
}

// Unnormalised probability [x - tau]_+^r.
__device__ __forceinline__ float weight(const Normaliser& nm, float x, float tau) {
  const float y = x - tau;
  return y > 0.0f ? power(nm, y) : 0.0f;
}

// A sweep over the set tiles of `bits` up to `last`, K (and V) tile kt double-buffered into
// sK / sV (2 stages each); body(kt, k_tile, v_tile) returns whether the tile mattered, and
// `keep` gets the tiles where it did for some thread. The block barrier after each body
// guards the stage the next prefetch overwrites.
template <int D, bool kWithV, typename Body>
__device__ __forceinline__ void sweep(const uint32_t* bits, uint32_t* keep, int last, bf16* sK,
                                      bf16* sV, const bf16* kh, const bf16* vh, int n,
                                      Body&& body) {
  using S = Shape<D>;
  int kt = next_tile(bits, 0, last);
  if (kt > last) return;
  load_tile<D>(sK, kh, kt * kTile, n);
  if (kWithV) load_tile<D>(sV, vh, kt * kTile, n);
  cp_async_commit();
  int stage = 0;
  while (kt <= last) {
    const int next = next_tile(bits, kt + 1, last);
    if (next <= last) {
      load_tile<D>(sK + (stage ^ 1) * S::kTileElems, kh, next * kTile, n);
      if (kWithV) load_tile<D>(sV + (stage ^ 1) * S::kTileElems, vh, next * kTile, n);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const bool mattered = body(kt, sK + stage * S::kTileElems, sV + stage * S::kTileElems);
    if (__syncthreads_or(mattered) && threadIdx.x == 0) keep[kt >> 5] |= 1u << (kt & 31);
    kt = next;
    stage ^= 1;
  }
}

// Forward: the threshold solve of the CUDA-core path (max pass, 8-point bracket pass,
// safeguarded Halley / Newton passes), each pass a tensor-core sweep, then the output pass
// with P V on the tensor cores. f and its derivatives are summed in float within a tile and
// in float64 across tiles; tau moves on float-representable values (the passes evaluate f at
// float(tau)), and a row is final when |f - 1| < 1e-6 or the next step does not change
// float(tau).
template <int D>
__global__ void __launch_bounds__(kThreadsTc, 1)
    tc_forward(DeviceParams p, const bf16* __restrict__ q, const bf16* __restrict__ k,
               const bf16* __restrict__ v, bf16* __restrict__ out, float* __restrict__ stats,
               uint32_t* __restrict__ mask_out, int mask_words) {
  using S = Shape<D>;
  extern __shared__ __align__(16) unsigned char tc_smem[];
  bf16* sQ = reinterpret_cast<bf16*>(tc_smem);
  bf16* sK = sQ + S::kTileElems;      // 2 stages
  bf16* sV = sK + 2 * S::kTileElems;  // 2 stages
  __shared__ uint32_t active[kMaskWords], keep[kMaskWords];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c4 = lane & 3;
  const int wrow = 16 * warp;
  const int n = static_cast<int>(p.n), qt = static_cast<int>(gridDim.x - 1 - blockIdx.x);
  const int64_t bh = blockIdx.y;
  const int i0 = qt * kTile;
  const size_t base = static_cast<size_t>(bh) * static_cast<size_t>(n) * D;
  const int h = static_cast<int>(bh % p.heads);
  const Normaliser nm = normaliser_of(p, h);
  const float slope = p.alibi ? static_cast<float>(p.alibi[h]) : 0.0f;

  int row[2];
  bool valid[2];
  float zc[2], cf[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row[r] = i0 + wrow + g + 8 * r;
    valid[r] = row[r] < n;
    cf[r] = valid[r] ? static_cast<float>(multiplier(p, bh, row[r], row[r] + 1)) : 1.0f;
    zc[r] = cf[r] * p.scale;
  }

  load_tile<D>(sQ, q + base, i0, n);
  cp_async_commit();
  for (int w = tid; w < mask_words; w += kThreadsTc) {
    // Dense causal: key tiles 0 .. qt.
    const int first = 32 * w;
    active[w] = qt >= first + 31 ? 0xffffffffu : (qt < first ? 0u : (2u << (qt - first)) - 1u);
    keep[w] = 0;
  }
  cp_async_wait<0>();
  __syncthreads();
  uint32_t qa[S::kHeld][4];
  hold_fragments<D>(qa, sQ, wrow, lane);

  // x of the 2 x 4 elements of a 16 x 16 block (key block kb of tile kt); -inf if invisible.
  auto block_x = [&](float(&x)[2][4], int kt, int kb, const bf16* cK) {
    score16<D>(x, qa, sQ, wrow, cK, 16 * kb, lane);
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1, j = kt * kTile + 16 * kb + 8 * hh + 2 * c4 + (e & 1);
        x[hh][e] =
            valid[r] && j <= row[r] ? logit_x(nm, zc[r], slope, x[hh][e], row[r] - j) : -INFINITY;
      }
    }
  };
  // Key blocks of the diagonal tile above every row of the warp hold nothing visible.
  auto skip_block = [&](int kt, int kb) { return kt == qt && 16 * kb > wrow + 15; };

  // Pass 1: the row maximum of x.
  float mx[2] = {-INFINITY, -INFINITY};
  sweep<D, false>(active, keep, qt, sK, sV, k + base, v + base, n,
                  [&](int kt, const bf16* cK, const bf16*) {
#pragma unroll
                    for (int kb = 0; kb < 4; ++kb) {
                      if (skip_block(kt, kb)) continue;
                      float x[2][4];
                      block_x(x, kt, kb, cK);
#pragma unroll
                      for (int e = 0; e < 4; ++e) {
                        mx[e >> 1] = fmaxf(mx[e >> 1], fmaxf(x[0][e], x[1][e]));
                      }
                    }
                    return true;
                  });
  double lo[2], hi[2], t[2];
  bool done[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float m = quad_max(mx[r]);
    done[r] = !valid[r];
    lo[r] = hi[r] = t[r] = 0.0;
    if (valid[r]) {
      lo[r] = static_cast<double>(m) - 1.0;
      hi[r] = static_cast<double>(m) - positive_pow(static_cast<double>(row[r] + 1), -nm.am1_d);
    }
  }
  // Every later sweep sets `keep` afresh: the tiles where some row has x above its lower bound.
  auto restart = [&]() {
    __syncthreads();
    for (int w = tid; w < mask_words; w += kThreadsTc) {
      active[w] = keep[w];
      keep[w] = 0;
    }
    __syncthreads();
  };
  restart();

  // Pass 2: f at kPoints evenly spaced points of every row's bracket (float, as the CUDA-core
  // path); keeps the sub-interval holding the root.
  {
    float first[2], step[2], lof[2], f[2][kPoints];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      step[r] = static_cast<float>((hi[r] - lo[r]) / (kPoints + 1));
      first[r] = static_cast<float>(lo[r] + (hi[r] - lo[r]) / (kPoints + 1));
      lof[r] = valid[r] ? static_cast<float>(lo[r]) : INFINITY;
#pragma unroll
      for (int m = 0; m < kPoints; ++m) f[r][m] = 0.0f;
    }
    sweep<D, false>(
        active, keep, qt, sK, sV, k + base, v + base, n, [&](int kt, const bf16* cK, const bf16*) {
          bool any = false;
#pragma unroll
          for (int kb = 0; kb < 4; ++kb) {
            if (skip_block(kt, kb)) continue;
            float x[2][4];
            block_x(x, kt, kb, cK);
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                const int r = e >> 1;
                if (x[hh][e] > lof[r]) {
                  any = true;
#pragma unroll
                  for (int m = 0; m < kPoints; ++m) {
                    const float y = x[hh][e] - fmaf(step[r], static_cast<float>(m), first[r]);
                    if (y > 0.0f) f[r][m] += power(nm, y);
                  }
                }
              }
            }
          }
          return any;
        });
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      int last = -1;  // the largest point with f >= 1
#pragma unroll
      for (int m = 0; m < kPoints; ++m) {
        if (quad_sum(f[r][m]) >= 1.0f) last = m;
      }
      if (!done[r]) {
        double new_lo = lo[r], new_hi = hi[r];
#pragma unroll
        for (int m = 0; m < kPoints; ++m) {
          if (m == last) new_lo = fmaf(step[r], static_cast<float>(m), first[r]);
          if (m == last + 1) new_hi = fmaf(step[r], static_cast<float>(m), first[r]);
        }
        lo[r] = new_lo;
        hi[r] = new_hi;
        // Newton and Halley move monotonically from the left (f convex); t stays a float.
        t[r] = static_cast<float>(new_lo);
      }
    }
  }
  restart();

  // Passes 3..: Halley (r >= 2) or Newton steps at t, kept inside the bracket.
  for (int pass = 0; pass < kMaxSolvePasses; ++pass) {
    double F0[2] = {0, 0}, F1[2] = {0, 0}, F2[2] = {0, 0};
    float tf[2], lof[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tf[r] = static_cast<float>(t[r]);
      lof[r] = done[r] && !valid[r] ? INFINITY : static_cast<float>(lo[r]);
    }
    sweep<D, false>(active, keep, qt, sK, sV, k + base, v + base, n,
                    [&](int kt, const bf16* cK, const bf16*) {
                      bool any = false;
                      float f0[2] = {0, 0}, f1[2] = {0, 0}, f2[2] = {0, 0};
#pragma unroll
                      for (int kb = 0; kb < 4; ++kb) {
                        if (skip_block(kt, kb)) continue;
                        float x[2][4];
                        block_x(x, kt, kb, cK);
#pragma unroll
                        for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
                          for (int e = 0; e < 4; ++e) {
                            const int r = e >> 1;
                            any |= x[hh][e] > lof[r];
                            const float y = x[hh][e] - tf[r];
                            if (y > 0.0f) {
                              if (nm.kind == 1) {
                                f0[r] += y;
                                f1[r] += 1.0f;
                              } else if (nm.kind == 2) {
                                f0[r] = fmaf(y, y, f0[r]);
                                f1[r] += y;
                                f2[r] += 1.0f;
                              } else {
                                const float yr1 = __powf(y, nm.r - 1.0f);
                                f0[r] = fmaf(yr1, y, f0[r]);
                                f1[r] += yr1;
                                f2[r] += __fdividef(yr1, y);
                              }
                            }
                          }
                        }
                      }
#pragma unroll
                      for (int r = 0; r < 2; ++r) {
                        F0[r] += f0[r];
                        F1[r] += f1[r];
                        F2[r] += f2[r];
                      }
                      return any;
                    });
    bool open = false;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const double s0 = quad_sum(F0[r]), s1 = quad_sum(F1[r]), s2 = quad_sum(F2[r]);
      if (done[r]) continue;
      const double tt = t[r], ff = s0 - 1.0;
      if (fabs(ff) < kSolveTolerance) {
        done[r] = true;
        continue;
      }
      if (ff > 0) {
        lo[r] = tt;
      } else {
        hi[r] = tt;
      }
      const double df = -nm.r_d * s1;  // f'(t)
      double next;
      if (nm.r_d >= 2.0) {
        const double ddf = nm.r_d * (nm.r_d - 1.0) * s2;
        next = tt - ff * df / (df * df - 0.5 * ff * ddf);
      } else {
        next = tt - ff / df;
      }
      if (!(next > lo[r] && next < hi[r])) next = 0.5 * (lo[r] + hi[r]);
      next = static_cast<float>(next);
      if (next == tt || hi[r] - lo[r] <= 1e-12 * fmax(1.0, fabs(tt))) {
        done[r] = true;  // at the resolution of float(tau)
      } else {
        t[r] = next;
        open = true;
      }
    }
    restart();
    if (!__syncthreads_or(open)) break;
  }

  // Output pass: p = [x - tau]_+^r, normalised by its actual sum; out = p V. `keep` ends as
  // the tiles holding support (the saved mask).
  float tau[2], norm[2] = {0.0f, 0.0f};
#pragma unroll
  for (int r = 0; r < 2; ++r) tau[r] = static_cast<float>(t[r]);
  float o[S::kNTiles][4];
  zero(o);
  sweep<D, true>(active, keep, qt, sK, sV, k + base, v + base, n,
                 [&](int kt, const bf16* cK, const bf16* cV) {
                   bool any = false;
#pragma unroll
                   for (int kb = 0; kb < 4; ++kb) {
                     if (skip_block(kt, kb)) continue;
                     float x[2][4];
                     block_x(x, kt, kb, cK);
                     bool here = false;
#pragma unroll
                     for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
                       for (int e = 0; e < 4; ++e) {
                         x[hh][e] = weight(nm, x[hh][e], tau[e >> 1]);
                         here |= x[hh][e] > 0.0f;
                         norm[e >> 1] += x[hh][e];
                       }
                     }
                     if (!__any_sync(0xffffffffu, here)) continue;  // warp-uniform
                     any = true;
                     uint32_t a_hi[4], a_lo[4];
                     to_a_fragment<kSplitForward>(x[0], x[1], a_hi, a_lo);
                     accumulate16<D, kSplitForward>(o, a_hi, a_lo, cV, 16 * kb, lane);
                   }
                   return any;
                 });
  __syncthreads();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float total = quad_sum(norm[r]);
    if (!valid[r]) continue;
    const float inv = 1.0f / total;
    bf16* orow = out + base + static_cast<size_t>(row[r]) * D;
#pragma unroll
    for (int nt = 0; nt < S::kNTiles; ++nt) {
      *reinterpret_cast<uint32_t*>(orow + 8 * nt + 2 * c4) =
          pack_bf16(o[nt][2 * r] * inv, o[nt][2 * r + 1] * inv);
    }
    if (c4 == 0) {
      float* st = stats + (static_cast<size_t>(bh) * n + row[r]) * 4;
      st[0] = tau[r];
      st[1] = total;
      st[2] = cf[r];
      st[3] = 0.0f;
    }
  }
  uint32_t* mask_row = mask_out + (static_cast<size_t>(bh) * gridDim.x + qt) * mask_words;
  for (int w = tid; w < mask_words; w += kThreadsTc) mask_row[w] = keep[w];
}

// Query-centric backward: sweep A gathers the row sums (mean_g = sum(s g) / sum(s) and the
// sums behind d alpha and d c), sweep B forms dz = s (g - mean_g) in fp32 and dq = c scale
// dz K on the tensor cores. Both recompute S = Q K^T and G = dO V^T.
template <int D>
__global__ void __launch_bounds__(kThreadsTc, 1)
    tc_backward_queries(DeviceParams p, const bf16* __restrict__ q, const bf16* __restrict__ k,
                        const bf16* __restrict__ v, const bf16* __restrict__ grad_out,
                        float* __restrict__ stats, const uint32_t* __restrict__ mask,
                        int mask_words, bf16* __restrict__ grad_q, double* __restrict__ row_grads) {
  using S = Shape<D>;
  extern __shared__ __align__(16) unsigned char tc_smem[];
  bf16* sQ = reinterpret_cast<bf16*>(tc_smem);
  bf16* sG = sQ + S::kTileElems;
  bf16* sK = sG + S::kTileElems;      // 2 stages
  bf16* sV = sK + 2 * S::kTileElems;  // 2 stages
  __shared__ uint32_t active[kMaskWords], keep[kMaskWords];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c4 = lane & 3;
  const int wrow = 16 * warp;
  const int n = static_cast<int>(p.n), qt = static_cast<int>(gridDim.x - 1 - blockIdx.x);
  const int64_t bh = blockIdx.y;
  const int i0 = qt * kTile;
  const size_t base = static_cast<size_t>(bh) * static_cast<size_t>(n) * D;
  const int h = static_cast<int>(bh % p.heads);
  const Normaliser nm = normaliser_of(p, h);
  const float slope = p.alibi ? static_cast<float>(p.alibi[h]) : 0.0f;
  const uint32_t* saved_mask = mask + (static_cast<size_t>(bh) * gridDim.x + qt) * mask_words;

  load_tile<D>(sQ, q + base, i0, n);
  load_tile<D>(sG, grad_out + base, i0, n);
  cp_async_commit();
  for (int w = tid; w < mask_words; w += kThreadsTc) active[w] = saved_mask[w];
  int row[2];
  bool valid[2];
  float zc[2], tau[2], norm[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row[r] = i0 + wrow + g + 8 * r;
    valid[r] = row[r] < n;
    const float* st = stats + (static_cast<size_t>(bh) * n + (valid[r] ? row[r] : 0)) * 4;
    tau[r] = valid[r] ? st[0] : 0.0f;
    norm[r] = valid[r] ? st[1] : 1.0f;
    zc[r] = (valid[r] ? st[2] : 1.0f) * p.scale;  // the forward's float c times scale
  }
  cp_async_wait<0>();
  __syncthreads();
  uint32_t qa[S::kHeld][4], ga[S::kHeld][4];
  hold_fragments<D>(qa, sQ, wrow, lane);
  hold_fragments<D>(ga, sG, wrow, lane);
  auto skip_block = [&](int kt, int kb) { return kt == qt && 16 * kb > wrow + 15; };
  // Scores (raw = scale q . k, x) and g = dO . v of a 16 x 16 block; p > 0 only if visible.
  auto block_terms = [&](float(&raw)[2][4], float(&x)[2][4], float(&gg)[2][4], int kt, int kb,
                         const bf16* cK, const bf16* cV) {
    score16<D>(raw, qa, sQ, wrow, cK, 16 * kb, lane);
    score16<D>(gg, ga, sG, wrow, cV, 16 * kb, lane);
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1, j = kt * kTile + 16 * kb + 8 * hh + 2 * c4 + (e & 1);
        x[hh][e] =
            valid[r] && j <= row[r] ? logit_x(nm, zc[r], slope, raw[hh][e], row[r] - j) : -INFINITY;
        raw[hh][e] *= p.scale;
      }
    }
  };

  // Sweep A. Row sums: s, s g, s z, p log p, g s z, g p log p, s g raw, s raw.
  float sums[8][2];
#pragma unroll
  for (int u = 0; u < 8; ++u) sums[u][0] = sums[u][1] = 0.0f;
  const int last = qt;
  sweep<D, true>(active, keep, last, sK, sV, k + base, v + base, n,
                 [&](int kt, const bf16* cK, const bf16* cV) {
#pragma unroll
                   for (int kb = 0; kb < 4; ++kb) {
                     if (skip_block(kt, kb)) continue;
                     float raw[2][4], x[2][4], gg[2][4];
                     block_terms(raw, x, gg, kt, kb, cK, cV);
#pragma unroll
                     for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
                       for (int e = 0; e < 4; ++e) {
                         const int r = e >> 1;
                         const float w = weight(nm, x[hh][e], tau[r]);
                         if (w > 0.0f) {
                           const float prob = w / norm[r];
                           const float s = jacobian_weight(nm, prob);
                           const float plogp = prob * __logf(prob);
                           const float z = x[hh][e] / nm.am1, gv = gg[hh][e];
                           sums[0][r] += s;
                           sums[1][r] += s * gv;
                           sums[2][r] += s * z;
                           sums[3][r] += plogp;
                           sums[4][r] += gv * s * z;
                           sums[5][r] += gv * plogp;
                           sums[6][r] += s * gv * raw[hh][e];
                           sums[7][r] += s * raw[hh][e];
                         }
                       }
                     }
                   }
                   return false;
                 });
  float total[8][2], mean_g[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
#pragma unroll
    for (int u = 0; u < 8; ++u) total[u][r] = quad_sum(sums[u][r]);
    mean_g[r] = valid[r] ? total[1][r] / total[0][r] : 0.0f;
  }

  // Sweep B: dq = c scale sum_j s_j (g_j - mean_g) k_j.
  float dq[S::kNTiles][4];
  zero(dq);
  sweep<D, true>(active, keep, last, sK, sV, k + base, v + base, n,
                 [&](int kt, const bf16* cK, const bf16* cV) {
#pragma unroll
                   for (int kb = 0; kb < 4; ++kb) {
                     if (skip_block(kt, kb)) continue;
                     float raw[2][4], x[2][4], gg[2][4];
                     block_terms(raw, x, gg, kt, kb, cK, cV);
                     bool here = false;
#pragma unroll
                     for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
                       for (int e = 0; e < 4; ++e) {
                         const int r = e >> 1;
                         const float w = weight(nm, x[hh][e], tau[r]);
                         float dz = 0.0f;
                         if (w > 0.0f) {
                           dz = jacobian_weight(nm, w / norm[r]) * (gg[hh][e] - mean_g[r]) * zc[r];
                           here = true;
                         }
                         x[hh][e] = dz;
                       }
                     }
                     if (!__any_sync(0xffffffffu, here)) continue;
                     uint32_t a_hi[4], a_lo[4];
                     to_a_fragment<kSplitBackward>(x[0], x[1], a_hi, a_lo);
                     accumulate16<D, kSplitBackward>(dq, a_hi, a_lo, cK, 16 * kb, lane);
                   }
                   return false;
                 });
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (!valid[r]) continue;
    bf16* drow = grad_q + base + static_cast<size_t>(row[r]) * D;
#pragma unroll
    for (int nt = 0; nt < S::kNTiles; ++nt) {
      *reinterpret_cast<uint32_t*>(drow + 8 * nt + 2 * c4) =
          pack_bf16(dq[nt][2 * r], dq[nt][2 * r + 1]);
    }
    if (c4 == 0) {
      stats[(static_cast<size_t>(bh) * n + row[r]) * 4 + 3] = mean_g[r];
      const double tau_prime = (double(total[2][r]) - total[3][r]) / total[0][r];
      const double dalpha =
          (double(total[4][r]) - tau_prime * total[1][r] - total[5][r]) / nm.am1_d;
      const double dc = double(total[6][r]) - double(mean_g[r]) * total[7][r];
      write_row_grads(p, row_grads, bh, row[r], row[r] + 1, dalpha, dc);
    }
  }
}

// Key-centric backward: a block of 64 keys gathers dv = P^T dO and dk = (dz c scale)^T Q from
// the query tiles whose saved mask bit says they hold support in this key tile. Per-query
// tau, norm, c scale and mean_g are staged in shared memory with each query tile.
template <int D>
__global__ void __launch_bounds__(kThreadsTc, 1)
    tc_backward_keys(DeviceParams p, const bf16* __restrict__ q, const bf16* __restrict__ k,
                     const bf16* __restrict__ v, const bf16* __restrict__ grad_out,
                     const float* __restrict__ stats, const uint32_t* __restrict__ mask,
                     int mask_words, bf16* __restrict__ grad_k, bf16* __restrict__ grad_v) {
  using S = Shape<D>;
  extern __shared__ __align__(16) unsigned char tc_smem[];
  bf16* sK = reinterpret_cast<bf16*>(tc_smem);
  bf16* sV = sK + S::kTileElems;
  bf16* sQ = sV + S::kTileElems;        // 2 stages
  bf16* sG = sQ + 2 * S::kTileElems;    // 2 stages
  __shared__ float4 rows_st[2][kTile];  // tau, norm, c scale, mean_g; per stage
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c4 = lane & 3;
  const int wrow = 16 * warp;
  const int n = static_cast<int>(p.n), tiles = static_cast<int>(gridDim.x);
  const int kt = tiles - 1 - static_cast<int>(blockIdx.x);
  const int64_t bh = blockIdx.y;
  const int k0 = kt * kTile;
  const size_t base = static_cast<size_t>(bh) * static_cast<size_t>(n) * D;
  const int h = static_cast<int>(bh % p.heads);
  const Normaliser nm = normaliser_of(p, h);
  const float slope = p.alibi ? static_cast<float>(p.alibi[h]) : 0.0f;
  const uint32_t* mask_bh = mask + static_cast<size_t>(bh) * tiles * mask_words;
  auto holds = [&](int qt) { return (mask_bh[qt * mask_words + (kt >> 5)] >> (kt & 31)) & 1u; };
  auto next_query_tile = [&](int from) {
    while (from < tiles && !holds(from)) ++from;
    return from;
  };
  auto stage_tile = [&](int qt, int stage) {
    load_tile<D>(sQ + stage * S::kTileElems, q + base, qt * kTile, n);
    load_tile<D>(sG + stage * S::kTileElems, grad_out + base, qt * kTile, n);
    cp_async_commit();
    if (tid < kTile) {
      const int i = qt * kTile + tid;
      float4 st = make_float4(0.0f, 1.0f, 0.0f, 0.0f);
      if (i < n) {
        st = *reinterpret_cast<const float4*>(stats + (static_cast<size_t>(bh) * n + i) * 4);
        st.z *= p.scale;
      }
      rows_st[stage][tid] = st;
    }
  };

  load_tile<D>(sK, k + base, k0, n);
  load_tile<D>(sV, v + base, k0, n);
  cp_async_commit();
  int key[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) key[r] = k0 + wrow + g + 8 * r;
  float dk[S::kNTiles][4], dv[S::kNTiles][4];
  zero(dk);
  zero(dv);
  int qt = next_query_tile(kt);
  if (qt < tiles) stage_tile(qt, 0);
  cp_async_wait<0>();
  __syncthreads();
  uint32_t ka[S::kHeld][4], va[S::kHeld][4];
  hold_fragments<D>(ka, sK, wrow, lane);
  hold_fragments<D>(va, sV, wrow, lane);
  int stage = 0;
  while (qt < tiles) {
    const int next = next_query_tile(qt + 1);
    if (next < tiles) {
      stage_tile(next, stage ^ 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* cQ = sQ + stage * S::kTileElems;
    const bf16* cG = sG + stage * S::kTileElems;
    const int i0 = qt * kTile;
#pragma unroll
    for (int kb = 0; kb < 4; ++kb) {
      // Query blocks of the diagonal tile below every key of the warp see none of them.
      if (qt == kt && 16 * kb + 15 < wrow) continue;
      float x[2][4], gg[2][4];
      score16<D>(x, ka, sK, wrow, cQ, 16 * kb, lane);   // S^T: keys x queries
      score16<D>(gg, va, sV, wrow, cG, 16 * kb, lane);  // G^T
      float dz[2][4];
      bool here = false;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = 16 * kb + 8 * hh + 2 * c4 + (e & 1), i = i0 + col, j = key[e >> 1];
          const float4 st = rows_st[stage][col];
          float prob = 0.0f, d = 0.0f;
          if (i < n && j <= i) {
            const float w = weight(nm, logit_x(nm, st.z, slope, x[hh][e], i - j), st.x);
            if (w > 0.0f) {
              prob = w / st.y;
              d = jacobian_weight(nm, prob) * (gg[hh][e] - st.w) * st.z;
              here = true;
            }
          }
          x[hh][e] = prob;
          dz[hh][e] = d;
        }
      }
      if (!__any_sync(0xffffffffu, here)) continue;
      uint32_t a_hi[4], a_lo[4];
      to_a_fragment<kSplitBackward>(x[0], x[1], a_hi, a_lo);
      accumulate16<D, kSplitBackward>(dv, a_hi, a_lo, cG, 16 * kb, lane);
      to_a_fragment<kSplitBackward>(dz[0], dz[1], a_hi, a_lo);
      accumulate16<D, kSplitBackward>(dk, a_hi, a_lo, cQ, 16 * kb, lane);
    }
    __syncthreads();  // the stage the next prefetch overwrites is free
    qt = next;
    stage ^= 1;
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (key[r] >= n) continue;
    bf16* krow = grad_k + base + static_cast<size_t>(key[r]) * D;
    bf16* vrow = grad_v + base + static_cast<size_t>(key[r]) * D;
#pragma unroll
    for (int nt = 0; nt < S::kNTiles; ++nt) {
      *reinterpret_cast<uint32_t*>(krow + 8 * nt + 2 * c4) =
          pack_bf16(dk[nt][2 * r], dk[nt][2 * r + 1]);
      *reinterpret_cast<uint32_t*>(vrow + 8 * nt + 2 * c4) =
          pack_bf16(dv[nt][2 * r], dv[nt][2 * r + 1]);
    }
  }
}

}  // namespace tcp

// ------------------------------------------------------------------------------------------
// Host side.

int64_t visible_offsets(const EntmaxAttentionParams& params) {
  const auto& b = params.base;
  int64_t count = 0;
  for (int64_t o = 0; o < b.num_offsets; ++o) count += b.offsets[o] < b.seq_len;
  return count;
}

int64_t query_tiles(const EntmaxAttentionParams& params) {
  return (params.base.seq_len + kTile - 1) / kTile;
}
int mask_words_of(const EntmaxAttentionParams& params) {
  return static_cast<int>((query_tiles(params) + 31) / 32);
}

DeviceParams device_params(const EntmaxAttentionParams& params) {
  const auto& b = params.base;
  DeviceParams p{};
  p.batch_heads = b.batch_heads;
  p.n = b.seq_len;
  p.d = static_cast<int>(b.head_dim);
  p.heads = static_cast<int>(params.num_heads);
  p.window = std::min(b.window, b.seq_len);
  p.window_slots = static_cast<int>(b.window_slots());
  p.offsets = static_cast<int>(visible_offsets(params));
  for (int o = 0; o < p.offsets; ++o) p.offset[o] = static_cast<int>(b.offsets[o]);
  p.slots = p.window_slots + p.offsets;
  p.scale = static_cast<float>(b.scale);
  p.softmax = params.softmax;
  p.scaling = params.log_n_scaling;
  p.per_query = params.per_query_scale;
  p.alpha = params.alpha;
  p.delta = params.delta;
  p.beta = params.beta;
  p.gamma = params.gamma;
  p.alibi = params.alibi_slopes;
  return p;
}

void require_supported(const EntmaxAttentionParams& params) {
  if (auto problem = entmax_cuda_support_problem(params); !problem.empty()) {
    throw std::invalid_argument("entmax attention (CUDA): " + problem);
  }
}

int padded_dim(int64_t d) { return d <= 32 ? 32 : (d <= 64 ? 64 : 128); }

template <int DP>
size_t forward_smem() {
  return (3 * Tiles<DP>::kTileFloats + Tiles<DP>::kProbFloats) * sizeof(float);
}
template <int DP>
size_t backward_smem() {
  return (4 * Tiles<DP>::kTileFloats + 2 * Tiles<DP>::kProbFloats) * sizeof(float);
}

template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(bytes)),
        "cudaFuncSetAttribute");
}

template <typename T, int DP>
void tiled_forward_launch(const DeviceParams& p, const EntmaxAttentionParams& params, const void* q,
                          const void* k, const void* v, void* out, void* saved,
                          cudaStream_t stream) {
  const size_t smem = forward_smem<DP>();
  allow_smem(tiled_forward<T, DP>, smem);
  const dim3 grid(static_cast<unsigned>(query_tiles(params)), static_cast<unsigned>(p.batch_heads));
  float* stats = static_cast<float*>(saved);
  auto* mask = reinterpret_cast<uint32_t*>(stats + p.batch_heads * p.n * 4);
  tiled_forward<T, DP><<<grid, kThreads, smem, stream>>>(
      p, static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
      static_cast<T*>(out), stats, mask, mask_words_of(params));
}

template <typename T, int DP>
void tiled_backward_launch(const DeviceParams& p, const EntmaxAttentionParams& params,
                           const void* q, const void* k, const void* v, const void* grad_out,
                           const void* saved, void* grad_q, void* grad_k, void* grad_v,
                           double* row_grads, cudaStream_t stream) {
  const size_t smem = backward_smem<DP>();
  allow_smem(tiled_backward_queries<T, DP>, smem);
  allow_smem(tiled_backward_keys<T, DP>, smem);
  const dim3 grid(static_cast<unsigned>(query_tiles(params)), static_cast<unsigned>(p.batch_heads));
  // The query pass adds mean_g to the saved row statistics (their 4th column).
  auto* stats = static_cast<float*>(const_cast<void*>(saved));
  const auto* mask = reinterpret_cast<const uint32_t*>(stats + p.batch_heads * p.n * 4);
  const int words = mask_words_of(params);
  tiled_backward_queries<T, DP><<<grid, kThreads, smem, stream>>>(
      p, static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
      static_cast<const T*>(grad_out), stats, mask, words, static_cast<T*>(grad_q), row_grads);
  tiled_backward_keys<T, DP><<<grid, kThreads, smem, stream>>>(
      p, static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
      static_cast<const T*>(grad_out), stats, mask, words, static_cast<T*>(grad_k),
      static_cast<T*>(grad_v));
}

template <typename T>
constexpr ScalarType type_of() {
  return std::is_same_v<T, __nv_bfloat16> ? ScalarType::kBFloat16 : ScalarType::kFloat32;
}

// The tensor-core path takes bf16, dense causal (no offsets, W >= n), head_dim 64 or 128,
// entmax (alpha in (1, 2]; softmax and SSMax keep the CUDA-core path). ASEntmax scaling (per
// head or per query) and ALiBi / NAPE slopes are supported.
bool uses_tensor_cores(const EntmaxAttentionParams& params, ScalarType type) {
  const auto& b = params.base;
  return type == ScalarType::kBFloat16 && !params.softmax && visible_offsets(params) == 0 &&
         b.window >= b.seq_len && (b.head_dim == 64 || b.head_dim == 128);
}

template <int D>
constexpr size_t tc_tiles_bytes(int tiles) {
  return static_cast<size_t>(tiles) * tcp::Shape<D>::kTileElems * sizeof(__nv_bfloat16);
}

template <int D>
void tc_forward_launch(const DeviceParams& p, const EntmaxAttentionParams& params, const void* q,
                       const void* k, const void* v, void* out, void* saved, cudaStream_t stream) {
  using bf16 = __nv_bfloat16;
  const size_t smem = tc_tiles_bytes<D>(5);  // Q + 2 stages of K and V
  allow_smem(tcp::tc_forward<D>, smem);
  const dim3 grid(static_cast<unsigned>(query_tiles(params)), static_cast<unsigned>(p.batch_heads));
  float* stats = static_cast<float*>(saved);
  auto* mask = reinterpret_cast<uint32_t*>(stats + p.batch_heads * p.n * 4);
  tcp::tc_forward<D><<<grid, tcp::kThreadsTc, smem, stream>>>(
      p, static_cast<const bf16*>(q), static_cast<const bf16*>(k), static_cast<const bf16*>(v),
      static_cast<bf16*>(out), stats, mask, mask_words_of(params));
}

template <int D>
void tc_backward_launch(const DeviceParams& p, const EntmaxAttentionParams& params, const void* q,
                        const void* k, const void* v, const void* grad_out, const void* saved,
                        void* grad_q, void* grad_k, void* grad_v, double* row_grads,
                        cudaStream_t stream) {
  using bf16 = __nv_bfloat16;
  const size_t smem = tc_tiles_bytes<D>(6);  // 2 resident tiles + 2 stages of 2 tiles
  allow_smem(tcp::tc_backward_queries<D>, smem);
  allow_smem(tcp::tc_backward_keys<D>, smem);
  const dim3 grid(static_cast<unsigned>(query_tiles(params)), static_cast<unsigned>(p.batch_heads));
  auto* stats = static_cast<float*>(const_cast<void*>(saved));  // the query pass adds mean_g
  const auto* mask = reinterpret_cast<const uint32_t*>(stats + p.batch_heads * p.n * 4);
  const int words = mask_words_of(params);
  tcp::tc_backward_queries<D><<<grid, tcp::kThreadsTc, smem, stream>>>(
      p, static_cast<const bf16*>(q), static_cast<const bf16*>(k), static_cast<const bf16*>(v),
      static_cast<const bf16*>(grad_out), stats, mask, words, static_cast<bf16*>(grad_q),
      row_grads);
  tcp::tc_backward_keys<D><<<grid, tcp::kThreadsTc, smem, stream>>>(
      p, static_cast<const bf16*>(q), static_cast<const bf16*>(k), static_cast<const bf16*>(v),
      static_cast<const bf16*>(grad_out), stats, mask, words, static_cast<bf16*>(grad_k),
      static_cast<bf16*>(grad_v));
}

// The row path's wide loads need every row 16-byte aligned: d a multiple of 16 bytes'
// elements and the tensors' starts aligned.
template <typename T>
bool rows_are_aligned(int d, std::initializer_list<const void*> tensors) {
  if ((d * sizeof(T)) % 16 != 0) return false;
  for (const void* t : tensors) {
    if (reinterpret_cast<std::uintptr_t>(t) % 16 != 0) return false;
  }
  return true;
}

template <typename T>
void forward_typed(const EntmaxAttentionParams& params, const void* q, const void* k, const void* v,
                   void* out, void* saved, cudaStream_t stream) {
  DeviceParams p = device_params(params);
  p.vec = rows_are_aligned<T>(p.d, {q, k, v});
  if (uses_tensor_cores(params, type_of<T>())) {
    if (p.d == 64) {
      tc_forward_launch<64>(p, params, q, k, v, out, saved, stream);
    } else {
      tc_forward_launch<128>(p, params, q, k, v, out, saved, stream);
    }
  } else if (entmax_uses_tiles(params)) {
    switch (padded_dim(p.d)) {
      case 32:
        tiled_forward_launch<T, 32>(p, params, q, k, v, out, saved, stream);
        break;
      case 64:
        tiled_forward_launch<T, 64>(p, params, q, k, v, out, saved, stream);
        break;
      default:
        tiled_forward_launch<T, 128>(p, params, q, k, v, out, saved, stream);
        break;
    }
  } else {
    const size_t smem = size_t{kRowWarps} * row_forward_floats(p.slots) * sizeof(float);
    allow_smem(row_forward<T>, smem);
    const auto blocks = static_cast<unsigned>((p.batch_heads * p.n + kRowWarps - 1) / kRowWarps);
    row_forward<T><<<blocks, kRowWarps * 32, smem, stream>>>(
        p, static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
        static_cast<T*>(out));
  }
  check(cudaGetLastError(), "forward launch");
}

template <typename T>
void backward_typed(const EntmaxAttentionParams& params, const void* q, const void* k,
                    const void* v, const void* grad_out, const void* saved, void* grad_q,
                    void* grad_k, void* grad_v, double* row_grads, void* workspace,
                    cudaStream_t stream) {
  DeviceParams p = device_params(params);
  p.vec = rows_are_aligned<T>(p.d, {q, k, v, grad_out});
  if (uses_tensor_cores(params, type_of<T>())) {
    if (p.d == 64) {
      tc_backward_launch<64>(p, params, q, k, v, grad_out, saved, grad_q, grad_k, grad_v, row_grads,
                             stream);
    } else {
      tc_backward_launch<128>(p, params, q, k, v, grad_out, saved, grad_q, grad_k, grad_v,
                              row_grads, stream);
    }
  } else if (entmax_uses_tiles(params)) {
    switch (padded_dim(p.d)) {
      case 32:
        tiled_backward_launch<T, 32>(p, params, q, k, v, grad_out, saved, grad_q, grad_k, grad_v,
                                     row_grads, stream);
        break;
      case 64:
        tiled_backward_launch<T, 64>(p, params, q, k, v, grad_out, saved, grad_q, grad_k, grad_v,
                                     row_grads, stream);
        break;
      default:
        tiled_backward_launch<T, 128>(p, params, q, k, v, grad_out, saved, grad_q, grad_k, grad_v,
                                      row_grads, stream);
        break;
    }
  } else {
    const size_t smem = size_t{kRowWarps} * row_backward_floats(p.slots) * sizeof(float);
    allow_smem(row_backward_queries<T>, smem);
    const auto blocks = static_cast<unsigned>((p.batch_heads * p.n + kRowWarps - 1) / kRowWarps);
    auto* slots = static_cast<float2*>(workspace);
    row_backward_queries<T><<<blocks, kRowWarps * 32, smem, stream>>>(
        p, static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
        static_cast<const T*>(grad_out), static_cast<T*>(grad_q), slots, row_grads);
    row_backward_keys<T><<<blocks, kRowWarps * 32, 0, stream>>>(
        p, static_cast<const T*>(q), static_cast<const T*>(grad_out), slots,
        static_cast<T*>(grad_k), static_cast<T*>(grad_v));
  }
  check(cudaGetLastError(), "backward launch");
}

size_t align16(size_t bytes) { return (bytes + 15) / 16 * 16; }

}  // namespace

bool entmax_uses_tiles(const EntmaxAttentionParams& params) { return visible_offsets(params) == 0; }

std::string entmax_cuda_support_problem(const EntmaxAttentionParams& params) {
  const auto& b = params.base;
  if (b.head_dim < 1 || b.head_dim > kEntmaxMaxHeadDim) {
    return "head_dim must be in 1..128 on CUDA, got " + std::to_string(b.head_dim);
  }
  if (b.num_offsets > kMaxEntmaxOffsets) {
    return "at most " + std::to_string(kMaxEntmaxOffsets) + " offsets on CUDA, got " +
           std::to_string(b.num_offsets);
  }
  if (entmax_uses_tiles(params)) {
    if (b.seq_len > kMaxTiledLength) {
      return "n must be <= " + std::to_string(kMaxTiledLength) +
             " for dense or window entmax attention on CUDA, got " + std::to_string(b.seq_len);
    }
  } else {
    const int64_t slots = b.window_slots() + visible_offsets(params);
    if (slots > kMaxRowSlots) {
      return "window + offsets (" + std::to_string(slots) +
             " slots) must be <= " + std::to_string(kMaxRowSlots) +
             " on CUDA when offsets are visible";
    }
    if (b.seq_len * b.batch_heads >= (int64_t{1} << 31) * kRowWarps) {
      return "batch * heads * n is too large for the CUDA grid";
    }
  }
  return {};
}

size_t entmax_attention_saved_bytes(const EntmaxAttentionParams& params) {
  if (!entmax_uses_tiles(params)) return 16;
  const auto& b = params.base;
  const size_t stats = static_cast<size_t>(b.batch_heads * b.seq_len) * 4 * sizeof(float);
  const size_t mask = static_cast<size_t>(b.batch_heads * query_tiles(params)) *
                      static_cast<size_t>(mask_words_of(params)) * sizeof(uint32_t);
  return align16(stats + mask);
}

size_t entmax_attention_saved_bytes_for_shape(int64_t batch_heads, int64_t seq_len) {
  EntmaxAttentionParams tiled;
  tiled.base.batch_heads = batch_heads;
  tiled.base.seq_len = seq_len;
  const size_t stats = static_cast<size_t>(batch_heads * seq_len) * 4 * sizeof(float);
  const size_t mask = static_cast<size_t>(batch_heads * query_tiles(tiled)) *
                      static_cast<size_t>(mask_words_of(tiled)) * sizeof(uint32_t);
  return align16(stats + mask);
}

int entmax_attention_tile() { return kTile; }

size_t entmax_attention_backward_workspace_bytes(const EntmaxAttentionParams& params) {
  if (entmax_uses_tiles(params)) return 16;
  const auto& b = params.base;
  const int64_t slots = b.window_slots() + visible_offsets(params);
  return align16(static_cast<size_t>(b.batch_heads * b.seq_len * slots) * sizeof(float) * 2);
}

void entmax_attention_forward_cuda(const EntmaxAttentionParams& params, ScalarType type,
                                   const void* q, const void* k, const void* v, void* out,
                                   void* saved, void* stream) {
  require_supported(params);
  auto s = static_cast<cudaStream_t>(stream);
  if (type == ScalarType::kBFloat16) {
    forward_typed<__nv_bfloat16>(params, q, k, v, out, saved, s);
  } else {
    forward_typed<float>(params, q, k, v, out, saved, s);
  }
}

void entmax_attention_backward_cuda(const EntmaxAttentionParams& params, ScalarType type,
                                    const void* q, const void* k, const void* v,
                                    const void* grad_out, const void* saved, void* grad_q,
                                    void* grad_k, void* grad_v, double* row_grads, void* workspace,
                                    void* stream) {
  require_supported(params);
  auto s = static_cast<cudaStream_t>(stream);
  if (type == ScalarType::kBFloat16) {
    backward_typed<__nv_bfloat16>(params, q, k, v, grad_out, saved, grad_q, grad_k, grad_v,
                                  row_grads, workspace, s);
  } else {
    backward_typed<float>(params, q, k, v, grad_out, saved, grad_q, grad_k, grad_v, row_grads,
                          workspace, s);
  }
}

}  // namespace reach::kernels::gpu
