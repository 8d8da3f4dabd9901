#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cuda/dilated_attention.hpp"
#include "kernels/cuda/dilated_attention_tc.cuh"

namespace reach::kernels::gpu {
namespace {

// ---- CUDA-core path: fp32 inputs, fractional offsets, the offset gradient -----------

// Each thread owns kDims consecutive dims of one row: 32 bytes of bf16 (two 16-byte
// loads), so a query's D/kDims threads read one row in one coalesced sweep.
constexpr int kDims = 16;
constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct OffsetTable {
  int count;
  int lo[kMaxOffsets];         // floor(x)
  float frac[kMaxOffsets];     // x - floor(x)
  int min_query[kMaxOffsets];  // ceil(x): first query that sees the slot
};

__device__ __forceinline__ void load_row(const float* p, float (&r)[kDims]) {
  const float4* p4 = reinterpret_cast<const float4*>(p);
#pragma unroll
  for (int t = 0; t < kDims / 4; ++t) {
    const float4 x = p4[t];
    r[4 * t] = x.x;
    r[4 * t + 1] = x.y;
    r[4 * t + 2] = x.z;
    r[4 * t + 3] = x.w;
  }
}

__device__ __forceinline__ void load_row(const __nv_bfloat16* p, float (&r)[kDims]) {
  const uint4* p4 = reinterpret_cast<const uint4*>(p);
#pragma unroll
  for (int t = 0; t < kDims / 8; ++t) {
    const uint4 x = p4[t];
    const unsigned words[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      __nv_bfloat162 pair;
      memcpy(&pair, &words[u], sizeof(pair));
      const float2 f = __bfloat1622float2(pair);
      r[8 * t + 2 * u] = f.x;
      r[8 * t + 2 * u + 1] = f.y;
    }
  }
}

__device__ __forceinline__ void store_row(float* p, const float (&r)[kDims]) {
  float4* p4 = reinterpret_cast<float4*>(p);
#pragma unroll
  for (int t = 0; t < kDims / 4; ++t) {
    p4[t] = make_float4(r[4 * t], r[4 * t + 1], r[4 * t + 2], r[4 * t + 3]);
  }
}

__device__ __forceinline__ void store_row(__nv_bfloat16* p, const float (&r)[kDims]) {
  uint4* p4 = reinterpret_cast<uint4*>(p);
#pragma unroll
  for (int t = 0; t < kDims / 8; ++t) {
    unsigned words[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const __nv_bfloat162 pair = __floats2bfloat162_rn(r[8 * t + 2 * u], r[8 * t + 2 * u + 1]);
      memcpy(&words[u], &pair, sizeof(pair));
    }
    p4[t] = make_uint4(words[0], words[1], words[2], words[3]);
  }
}

__device__ __forceinline__ float dot(const float (&a)[kDims], const float (&b)[kDims]) {
  float s = 0.f;
#pragma unroll
  for (int t = 0; t < kDims; ++t) s = fmaf(a[t], b[t], s);
  return s;
}

// Sum over the Group consecutive lanes that own one row.
template <int Group>
__device__ __forceinline__ float group_sum(float x) {
#pragma unroll
  for (int o = Group / 2; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Threads of one query: lanes [g * Group, (g + 1) * Group); all loops have trip counts
// uniform over the block, and out-of-range rows are clamped and masked, so the
// shuffles always see full warps.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                   T* __restrict__ out, float* __restrict__ lse, int n, int window_slots,
                   float scale, OffsetTable table, int kv_group) {
  constexpr int kGroup = D / kDims;
  constexpr int kQueriesPerBlock = kThreads / kGroup;
  const int part = threadIdx.x % kGroup;
  const int i = blockIdx.x * kQueriesPerBlock + threadIdx.x / kGroup;
  const bool active = i < n;
  const int ic = active ? i : n - 1;
  const size_t head = static_cast<size_t>(blockIdx.y) * n * D + part * kDims;
  const size_t kv_head = static_cast<size_t>(blockIdx.y / kv_group) * n * D + part * kDims;
  const T* kh = k + kv_head;
  const T* vh = v + kv_head;

  float qr[kDims], acc[kDims];
  load_row(q + head + static_cast<size_t>(ic) * D, qr);
  const float scale_log2 = scale * kLog2e;  // scores in log2 units: exp2f below
#pragma unroll
  for (int t = 0; t < kDims; ++t) {
    qr[t] *= scale_log2;
    acc[t] = 0.f;
  }
  float m = -INFINITY, l = 0.f;

  auto accumulate = [&](float s, const float(&vr)[kDims]) {
    if (s > m) {
      const float c = exp2f(m - s);
      l *= c;
#pragma unroll
      for (int t = 0; t < kDims; ++t) acc[t] *= c;
      m = s;
    }
    const float p = exp2f(s - m);
    l += p;
#pragma unroll
    for (int t = 0; t < kDims; ++t) acc[t] = fmaf(p, vr[t], acc[t]);
  };

#pragma unroll 4
  for (int w = 0; w < window_slots; ++w) {
    const int row = ic - w;
    const int r = row < 0 ? 0 : row;
    float kr[kDims], vr[kDims];
    load_row(kh + static_cast<size_t>(r) * D, kr);
    load_row(vh + static_cast<size_t>(r) * D, vr);
    const float s = group_sum<kGroup>(dot(qr, kr));
    if (row >= 0) accumulate(s, vr);
  }
  for (int kk = 0; kk < table.count; ++kk) {
    const int lo = table.lo[kk];
    const float f = table.frac[kk];
    const bool visible = ic >= table.min_query[kk];
    const int r_lo = ic - lo < 0 ? 0 : ic - lo;
    float kr[kDims], vr[kDims];
    load_row(kh + static_cast<size_t>(r_lo) * D, kr);
    load_row(vh + static_cast<size_t>(r_lo) * D, vr);
    if (f > 0.f) {  // uniform over the grid
      const int r_hi = ic - lo - 1 < 0 ? 0 : ic - lo - 1;
      float k2[kDims], v2[kDims];
      load_row(kh + static_cast<size_t>(r_hi) * D, k2);
      load_row(vh + static_cast<size_t>(r_hi) * D, v2);
#pragma unroll
      for (int t = 0; t < kDims; ++t) {
        kr[t] = fmaf(f, k2[t] - kr[t], kr[t]);
        vr[t] = fmaf(f, v2[t] - vr[t], vr[t]);
      }
    }
    const float s = group_sum<kGroup>(dot(qr, kr));
    if (visible) accumulate(s, vr);
  }

  if (!active) return;
  const float inv = 1.f / l;
#pragma unroll
  for (int t = 0; t < kDims; ++t) acc[t] *= inv;
  store_row(out + head + static_cast<size_t>(i) * D, acc);
  if (part == 0) lse[static_cast<size_t>(blockIdx.y) * n + i] = (m + log2f(l)) * kLn2;
}

// Pass 1 of the backward, query-centric: dq, and P and dS per (slot, query) stored
// slot-major ([BH, S, n]) so pass 2 reads them coalesced. Offset gradients are
// summed per block into partials[block, K].
template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    backward_query_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                          const T* __restrict__ out, const float* __restrict__ lse,
                          const T* __restrict__ grad_out, T* __restrict__ grad_q,
                          float* __restrict__ prob, float* __restrict__ dscore,
                          float* __restrict__ offset_partials, int n, int window_slots, float scale,
                          OffsetTable table, int kv_group) {
  constexpr int kGroup = D / kDims;
  constexpr int kQueriesPerBlock = kThreads / kGroup;
  __shared__ float block_goff[kWarps][kMaxOffsets];
  const int part = threadIdx.x % kGroup;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int i = blockIdx.x * kQueriesPerBlock + threadIdx.x / kGroup;
  const bool active = i < n;
  const int ic = active ? i : n - 1;
  const bool writer = active && part == 0;
  const size_t head = static_cast<size_t>(blockIdx.y) * n * D + part * kDims;
  const size_t kv_head = static_cast<size_t>(blockIdx.y / kv_group) * n * D + part * kDims;
  const T* kh = k + kv_head;
  const T* vh = v + kv_head;
  const int slots = window_slots + table.count;
  float* prob_h = prob + static_cast<size_t>(blockIdx.y) * slots * n;
  float* dscore_h = dscore + static_cast<size_t>(blockIdx.y) * slots * n;

  float qr[kDims], dor[kDims], dq[kDims];
  load_row(q + head + static_cast<size_t>(ic) * D, qr);
  load_row(grad_out + head + static_cast<size_t>(ic) * D, dor);
#pragma unroll
  for (int t = 0; t < kDims; ++t) dq[t] = 0.f;
  float di;  // D_i = dO . O = sum_j P_ij dP_ij, the softmax backward's row term
  {
    float orow[kDims];
    load_row(out + head + static_cast<size_t>(ic) * D, orow);
    di = group_sum<kGroup>(dot(dor, orow));
  }
  const float lse_i = lse[static_cast<size_t>(blockIdx.y) * n + ic];

#pragma unroll 2
  for (int w = 0; w < window_slots; ++w) {
    const int row = ic - w;
    const int r = row < 0 ? 0 : row;
    float kr[kDims], vr[kDims];
    load_row(kh + static_cast<size_t>(r) * D, kr);
    load_row(vh + static_cast<size_t>(r) * D, vr);
    const float s = scale * group_sum<kGroup>(dot(qr, kr));
    const float dp = group_sum<kGroup>(dot(dor, vr));
    const float p = row >= 0 ? __expf(s - lse_i) : 0.f;
    const float ds = p * (dp - di);
#pragma unroll
    for (int t = 0; t < kDims; ++t) dq[t] = fmaf(ds, kr[t], dq[t]);
    if (writer) {
      prob_h[static_cast<size_t>(w) * n + i] = p;
      dscore_h[static_cast<size_t>(w) * n + i] = ds;
    }
  }

  if (offset_partials) {
    for (int t = threadIdx.x; t < kWarps * kMaxOffsets; t += kThreads) {
      block_goff[t / kMaxOffsets][t % kMaxOffsets] = 0.f;
    }
    __syncthreads();
  }
  for (int kk = 0; kk < table.count; ++kk) {
    const int lo = table.lo[kk];
    const float f = table.frac[kk];
    const bool visible = ic >= table.min_query[kk];
    const bool has_hi = ic - lo - 1 >= 0;
    const int r_lo = ic - lo < 0 ? 0 : ic - lo;
    const int r_hi = has_hi ? ic - lo - 1 : 0;
    float klo[kDims], khi[kDims], vt[kDims];
    load_row(kh + static_cast<size_t>(r_lo) * D, klo);
    load_row(kh + static_cast<size_t>(r_hi) * D, khi);
    const float q_lo = group_sum<kGroup>(dot(qr, klo));
    const float q_hi = group_sum<kGroup>(dot(qr, khi));
    load_row(vh + static_cast<size_t>(r_lo) * D, vt);
    const float d_lo = group_sum<kGroup>(dot(dor, vt));
    load_row(vh + static_cast<size_t>(r_hi) * D, vt);
    const float d_hi = group_sum<kGroup>(dot(dor, vt));
    const float s = scale * ((1.f - f) * q_lo + f * q_hi);
    const float p = visible ? __expf(s - lse_i) : 0.f;
    const float dp = (1.f - f) * d_lo + f * d_hi;
    const float ds = p * (dp - di);
#pragma unroll
    for (int t = 0; t < kDims; ++t) {
      dq[t] = fmaf(ds * (1.f - f), klo[t], dq[t]);
      dq[t] = fmaf(ds * f, khi[t], dq[t]);
    }
    const int slot = window_slots + kk;
    if (writer) {
      prob_h[static_cast<size_t>(slot) * n + i] = p;
      dscore_h[static_cast<size_t>(slot) * n + i] = ds;
    }
    if (offset_partials) {
      // d score / dx = scale * q . (k_hi - k_lo); d out / dx = p * (v_hi - v_lo).
      const float g =
          (writer && visible && has_hi) ? ds * scale * (q_hi - q_lo) + p * (d_hi - d_lo) : 0.f;
      const float gw = warp_sum(g);
      if (lane == 0) block_goff[warp][kk] += gw;
    }
  }
  if (offset_partials) {
    __syncthreads();
    if (threadIdx.x < table.count) {
      float sum = 0.f;
#pragma unroll
      for (int wp = 0; wp < kWarps; ++wp) sum += block_goff[wp][threadIdx.x];
      const size_t block = static_cast<size_t>(blockIdx.y) * gridDim.x + blockIdx.x;
      offset_partials[block * table.count + threadIdx.x] = sum;
    }
  }
  if (!active) return;
#pragma unroll
  for (int t = 0; t < kDims; ++t) dq[t] *= scale;
  store_row(grad_q + head + static_cast<size_t>(i) * D, dq);
}

// Pass 2, key-centric: key j gathers the (query, slot) pairs that saw it. No shuffles.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    backward_key_kernel(const T* __restrict__ q, const T* __restrict__ grad_out,
                        const float* __restrict__ prob, const float* __restrict__ dscore,
                        T* __restrict__ grad_k, T* __restrict__ grad_v, int n, int window_slots,
                        float scale, OffsetTable table) {
  constexpr int kGroup = D / kDims;
  constexpr int kKeysPerBlock = kThreads / kGroup;
  const int part = threadIdx.x % kGroup;
  const int j = blockIdx.x * kKeysPerBlock + threadIdx.x / kGroup;
  if (j >= n) return;
  const size_t head = static_cast<size_t>(blockIdx.y) * n * D + part * kDims;
  const T* qh = q + head;
  const T* doh = grad_out + head;
  const int slots = window_slots + table.count;
  const float* prob_h = prob + static_cast<size_t>(blockIdx.y) * slots * n;
  const float* dscore_h = dscore + static_cast<size_t>(blockIdx.y) * slots * n;
  float dk[kDims], dv[kDims];
#pragma unroll
  for (int t = 0; t < kDims; ++t) dk[t] = dv[t] = 0.f;

  auto gather = [&](int slot, int i, float weight) {
    const float p = prob_h[static_cast<size_t>(slot) * n + i];
    const float ds = dscore_h[static_cast<size_t>(slot) * n + i];
    if (p == 0.f && ds == 0.f) return;  // slot not visible to query i
    float qr[kDims], dor[kDims];
    load_row(qh + static_cast<size_t>(i) * D, qr);
    load_row(doh + static_cast<size_t>(i) * D, dor);
    const float wds = weight * ds, wp = weight * p;
#pragma unroll
    for (int t = 0; t < kDims; ++t) {
      dk[t] = fmaf(wds, qr[t], dk[t]);
      dv[t] = fmaf(wp, dor[t], dv[t]);
    }
  };

  const int last_w = n - j < window_slots ? n - j : window_slots;
#pragma unroll 2
  for (int w = 0; w < last_w; ++w) gather(w, j + w, 1.f);
  for (int kk = 0; kk < table.count; ++kk) {
    const int slot = window_slots + kk;
    const int lo = table.lo[kk];
    const float f = table.frac[kk];
    if (j + lo < n) gather(slot, j + lo, 1.f - f);               // key j is the floor end
    if (f > 0.f && j + lo + 1 < n) gather(slot, j + lo + 1, f);  // key j is the ceil end
  }
#pragma unroll
  for (int t = 0; t < kDims; ++t) dk[t] *= scale;
  store_row(grad_k + head + static_cast<size_t>(j) * D, dk);
  store_row(grad_v + head + static_cast<size_t>(j) * D, dv);
}

// grad_offsets[kk] = sum over blocks of partials[block, kk], in double.
__global__ void reduce_offset_partials(const float* __restrict__ partials, int blocks, int count,
                                       double* __restrict__ grad_offsets) {
  __shared__ double sums[256];
  const int kk = blockIdx.x;
  double s = 0.0;
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) {
    s += static_cast<double>(partials[static_cast<size_t>(b) * count + kk]);
  }
  sums[threadIdx.x] = s;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (static_cast<int>(threadIdx.x) < stride) sums[threadIdx.x] += sums[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) grad_offsets[kk] = sums[0];
}

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("dilated attention (CUDA): ") + what + ": " +
                             cudaGetErrorString(status));
  }
}

void check_params(const DilatedAttentionParams& p) {
  if (auto message = validate_params(p); !message.empty()) {
    throw std::invalid_argument("dilated attention: " + message);
  }
  if (auto message = cuda_support_problem(p); !message.empty()) {
    throw std::invalid_argument("dilated attention (CUDA): " + message);
  }
}

OffsetTable make_table(const DilatedAttentionParams& p) {
  OffsetTable table{};
  table.count = static_cast<int>(p.num_offsets);
  for (int64_t kk = 0; kk < p.num_offsets; ++kk) {
    const double x = p.offsets[kk];
    const double lo = std::floor(x);
    table.lo[kk] = static_cast<int>(lo);
    table.frac[kk] = static_cast<float>(x - lo);
    table.min_query[kk] = static_cast<int>(lo) + (x > lo ? 1 : 0);
  }
  return table;
}

int queries_per_block(int64_t head_dim) { return kThreads / static_cast<int>(head_dim / kDims); }

template <typename T, int D>
void launch_forward(const DilatedAttentionParams& p, const void* q, const void* k, const void* v,
                    void* out, float* lse, cudaStream_t stream) {
  const int n = static_cast<int>(p.seq_len);
  const dim3 grid((n + queries_per_block(D) - 1) / queries_per_block(D),
                  static_cast<unsigned>(p.batch_heads));
  forward_kernel<T, D><<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
      static_cast<T*>(out), lse, n, static_cast<int>(p.window_slots()), static_cast<float>(p.scale),
      make_table(p), static_cast<int>(p.kv_group));
  check_cuda(cudaGetLastError(), "forward launch");
}

struct Workspace {
  float* prob;
  float* dscore;
  float* offset_partials;
};

Workspace split_workspace(const DilatedAttentionParams& p, void* workspace) {
  const size_t per = static_cast<size_t>(p.batch_heads) * p.slots() * p.seq_len;
  float* base = static_cast<float*>(workspace);
  return {base, base + per, base + 2 * per};
}

size_t query_blocks(const DilatedAttentionParams& p) {
  const int64_t qpb = queries_per_block(p.head_dim);
  return static_cast<size_t>((p.seq_len + qpb - 1) / qpb) * static_cast<size_t>(p.batch_heads);
}

template <typename T, int D>
void launch_backward(const DilatedAttentionParams& p, const void* q, const void* k, const void* v,
                     const void* out, const float* lse, const void* grad_out, void* grad_q,
                     void* grad_k, void* grad_v, double* grad_offsets, void* workspace,
                     cudaStream_t stream) {
  const int n = static_cast<int>(p.seq_len);
  const int ws = static_cast<int>(p.window_slots());
  const OffsetTable table = make_table(p);
  const Workspace w = split_workspace(p, workspace);
  const bool want_offsets = grad_offsets != nullptr && p.num_offsets > 0;
  const dim3 grid((n + queries_per_block(D) - 1) / queries_per_block(D),
                  static_cast<unsigned>(p.batch_heads));
  backward_query_kernel<T, D><<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
      static_cast<const T*>(out), lse, static_cast<const T*>(grad_out), static_cast<T*>(grad_q),
      w.prob, w.dscore, want_offsets ? w.offset_partials : nullptr, n, ws,
      static_cast<float>(p.scale), table, static_cast<int>(p.kv_group));
  check_cuda(cudaGetLastError(), "backward query-pass launch");
  backward_key_kernel<T, D><<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(q), static_cast<const T*>(grad_out), w.prob, w.dscore,
      static_cast<T*>(grad_k), static_cast<T*>(grad_v), n, ws, static_cast<float>(p.scale), table);
  check_cuda(cudaGetLastError(), "backward key-pass launch");
  if (want_offsets) {
    reduce_offset_partials<<<static_cast<unsigned>(p.num_offsets), 256, 0, stream>>>(
        w.offset_partials, static_cast<int>(grid.x * grid.y), table.count, grad_offsets);
    check_cuda(cudaGetLastError(), "offset-gradient reduction launch");
  }
}

// ---- tensor-core path (dilated_attention_tc.cuh) -----------------------------------

bool integer_offsets(const DilatedAttentionParams& p) {
  for (int64_t kk = 0; kk < p.num_offsets; ++kk) {
    if (p.offsets[kk] != std::floor(p.offsets[kk])) return false;
  }
  return true;
}

// The backward on the tensor cores: bf16 at head_dim 64 for any offsets and the offset
// gradient; at 128 for integer offsets without it (the fractional variant would spill).
bool tensor_core_path(const DilatedAttentionParams& p, ScalarType type, bool offsets_grad) {
  if (type != ScalarType::kBFloat16) return false;
  if (p.head_dim == 64) return true;
  return p.head_dim == 128 && integer_offsets(p) && !(offsets_grad && p.num_offsets > 0);
}

// Fractional offsets or the offset gradient: the backward's two-row (Frac) variant.
bool fractional_backward(const DilatedAttentionParams& p, bool offsets_grad) {
  return !integer_offsets(p) || (offsets_grad && p.num_offsets > 0);
}

tc::IntOffsets make_int_offsets(const DilatedAttentionParams& p) {
  tc::IntOffsets offs{};
  offs.count = static_cast<int>(p.num_offsets);
  for (int64_t kk = 0; kk < p.num_offsets; ++kk) {
    const double lo = std::floor(p.offsets[kk]);
    offs.d[kk] = static_cast<int>(lo);
    offs.frac[kk] = static_cast<float>(p.offsets[kk] - lo);
  }
  return offs;
}

// The forward takes the tensor cores for every bf16 head_dim 64/128 call, fractional
// offsets included (the backward then runs on the CUDA cores from the same lse).
bool tensor_core_forward(const DilatedAttentionParams& p, ScalarType type) {
  return type == ScalarType::kBFloat16 && (p.head_dim == 64 || p.head_dim == 128);
}

// Kernels using more than 48 KB of dynamic shared memory must opt in.
template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(bytes)),
             "shared-memory opt-in");
}

struct TcLaunch {
  int n;
  int window;  // min(W, n): the same mask, and no overflow in j + W
  float scale;
  float scale_log2;
  dim3 grid;
  tc::IntOffsets offs;
};

TcLaunch tc_launch(const DilatedAttentionParams& p) {
  TcLaunch t;
  t.n = static_cast<int>(p.seq_len);
  t.window = static_cast<int>(p.window_slots());
  t.scale = static_cast<float>(p.scale);
  t.scale_log2 = static_cast<float>(p.scale * 1.4426950408889634);
  t.grid = dim3(static_cast<unsigned>((p.seq_len + tc::kTile - 1) / tc::kTile),
                static_cast<unsigned>(p.batch_heads));
  t.offs = make_int_offsets(p);
  return t;
}

// Offsets whose rows one warp loads before using any: 2 at d = 64 (4 measured slower:
// fewer resident blocks), 1 at d = 128 (2 spills).
template <int D>
constexpr int kTcGroup = D == 64 ? 2 : 1;

template <int D, int G, bool Frac>
void tc_forward_group(const DilatedAttentionParams& p, const void* q, const void* k, const void* v,
                      void* out, float* lse, cudaStream_t stream) {
  using T = __nv_bfloat16;
  const TcLaunch t = tc_launch(p);
  constexpr size_t smem = tc::forward_smem_bytes<D>();
  allow_smem(tc::forward_kernel<D, G, Frac>, smem);
  tc::forward_kernel<D, G, Frac><<<t.grid, tc::kThreads, smem, stream>>>(
      static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
      static_cast<T*>(out), lse, t.n, t.window, t.scale_log2, t.offs, static_cast<int>(p.kv_group),
      static_cast<int>(p.out_heads));
  check_cuda(cudaGetLastError(), "forward launch (tensor cores)");
}

template <int D>
void tc_forward(const DilatedAttentionParams& p, const void* q, const void* k, const void* v,
                void* out, float* lse, cudaStream_t stream) {
  if (integer_offsets(p)) {
    tc_forward_group<D, kTcGroup<D>, false>(p, q, k, v, out, lse, stream);
  } else {
    tc_forward_group<D, 1, true>(p, q, k, v, out, lse, stream);  // two rows per offset
  }
}

size_t tc_query_blocks(const DilatedAttentionParams& p) {
  return static_cast<size_t>((p.seq_len + tc::kTile - 1) / tc::kTile) *
         static_cast<size_t>(p.batch_heads);
}

// delta, P and dS per offset, then the per-block offset-gradient partials.
size_t tc_workspace_floats(const DilatedAttentionParams& p) {
  const size_t rows = static_cast<size_t>(p.batch_heads) * p.seq_len;
  const size_t K = static_cast<size_t>(p.num_offsets);
  return rows * (1 + 2 * K) + tc_query_blocks(p) * K;
}

template <int D, int G, bool Frac>
void tc_backward_group(const DilatedAttentionParams& p, const void* q, const void* k, const void* v,
                       const void* out, const float* lse, const void* grad_out, void* grad_q,
                       void* grad_k, void* grad_v, double* grad_offsets, void* workspace,
                       cudaStream_t stream) {
  using T = __nv_bfloat16;
  const TcLaunch t = tc_launch(p);
  const size_t rows = static_cast<size_t>(p.batch_heads) * p.seq_len;
  float* delta = static_cast<float*>(workspace);
  float* prob = delta + rows;
  float* dscore = prob + rows * static_cast<size_t>(p.num_offsets);
  float* partials = dscore + rows * static_cast<size_t>(p.num_offsets);
  const bool want_offsets = grad_offsets != nullptr && p.num_offsets > 0;
  constexpr size_t smem_q = tc::backward_query_smem_bytes<D>();
  allow_smem(tc::backward_query_kernel<D, G, Frac>, smem_q);
  tc::backward_query_kernel<D, G, Frac><<<t.grid, tc::kThreads, smem_q, stream>>>(
      static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
      static_cast<const T*>(out), lse, static_cast<const T*>(grad_out), static_cast<T*>(grad_q),
      delta, prob, dscore, want_offsets ? partials : nullptr, t.n, t.window, t.scale, t.scale_log2,
      t.offs, static_cast<int>(p.kv_group), static_cast<int>(p.out_heads));
  check_cuda(cudaGetLastError(), "backward query-pass launch (tensor cores)");
  constexpr size_t smem_k = tc::backward_key_smem_bytes<D>();
  allow_smem(tc::backward_key_kernel<D, G, Frac>, smem_k);
  // Token-major grad_out: heads fastest (see the kernel) where grid.y can hold the tiles.
  const bool heads_fastest = p.out_heads > 0 && t.grid.x <= 65535u;
  const dim3 key_grid = heads_fastest ? dim3(t.grid.y, t.grid.x) : t.grid;
  tc::backward_key_kernel<D, G, Frac><<<key_grid, tc::kThreads, smem_k, stream>>>(
      static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), lse,
      static_cast<const T*>(grad_out), delta, prob, dscore, static_cast<T*>(grad_k),
      static_cast<T*>(grad_v), t.n, t.window, t.scale, t.scale_log2, t.offs,
      static_cast<int>(p.kv_group), static_cast<int>(p.out_heads), heads_fastest);
  check_cuda(cudaGetLastError(), "backward key-pass launch (tensor cores)");
  if (want_offsets) {
    reduce_offset_partials<<<static_cast<unsigned>(p.num_offsets), 256, 0, stream>>>(
        partials, static_cast<int>(tc_query_blocks(p)), static_cast<int>(p.num_offsets),
        grad_offsets);
    check_cuda(cudaGetLastError(), "offset-gradient reduction launch (tensor cores)");
  }
}

template <int D>
void tc_backward(const DilatedAttentionParams& p, const void* q, const void* k, const void* v,
                 const void* out, const float* lse, const void* grad_out, void* grad_q,
                 void* grad_k, void* grad_v, double* grad_offsets, void* workspace,
                 cudaStream_t stream) {
  if constexpr (D == 64) {
    if (fractional_backward(p, grad_offsets != nullptr)) {
      tc_backward_group<D, 1, true>(p, q, k, v, out, lse, grad_out, grad_q, grad_k, grad_v,
                                    grad_offsets, workspace, stream);
      return;
    }
  }
  tc_backward_group<D, kTcGroup<D>, false>(p, q, k, v, out, lse, grad_out, grad_q, grad_k, grad_v,
                                           nullptr, workspace, stream);
}

size_t cuda_core_workspace_bytes(const DilatedAttentionParams& p) {
  const size_t per = static_cast<size_t>(p.batch_heads) * p.slots() * p.seq_len;
  return sizeof(float) * (2 * per + query_blocks(p) * static_cast<size_t>(p.num_offsets));
}

}  // namespace

bool dilated_attention_uses_tensor_cores(const DilatedAttentionParams& params, ScalarType type,
                                         bool offsets_grad) {
  return tensor_core_path(params, type, offsets_grad);
}

std::string cuda_support_problem(const DilatedAttentionParams& p) {
  if (p.head_dim != 64 && p.head_dim != 128) {
    return "head_dim must be 64 or 128, got " + std::to_string(p.head_dim);
  }
  if (p.num_offsets > kMaxOffsets) {
    return "at most " + std::to_string(kMaxOffsets) + " offsets, got " +
           std::to_string(p.num_offsets);
  }
  if (p.seq_len * p.head_dim >= (int64_t{1} << 31) / 2 || p.batch_heads >= 65536) {
    return "sequence too long for 32-bit row indices or too many batch*heads (n = " +
           std::to_string(p.seq_len) + ", batch*heads = " + std::to_string(p.batch_heads) + ")";
  }
  for (int64_t kk = 0; kk < p.num_offsets; ++kk) {
    if (p.offsets[kk] >= static_cast<double>(int64_t{1} << 30)) return "offset too large";
  }
  return {};
}

void dilated_attention_forward_cuda(const DilatedAttentionParams& p, ScalarType type, const void* q,
                                    const void* k, const void* v, void* out, float* lse,
                                    void* stream_ptr) {
  check_params(p);
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  if (p.out_heads != 0 && !tensor_core_forward(p, type)) {
    throw std::invalid_argument(
        "dilated attention (CUDA): a token-major output (out_heads > 0) needs the tensor-core "
        "forward (bfloat16, head_dim 64 or 128)");
  }
  if (tensor_core_forward(p, type)) {
    if (p.head_dim == 64)
      tc_forward<64>(p, q, k, v, out, lse, stream);
    else
      tc_forward<128>(p, q, k, v, out, lse, stream);
  } else if (type == ScalarType::kBFloat16) {
    if (p.head_dim == 64)
      launch_forward<__nv_bfloat16, 64>(p, q, k, v, out, lse, stream);
    else
      launch_forward<__nv_bfloat16, 128>(p, q, k, v, out, lse, stream);
  } else {
    if (p.head_dim == 64)
      launch_forward<float, 64>(p, q, k, v, out, lse, stream);
    else
      launch_forward<float, 128>(p, q, k, v, out, lse, stream);
  }
}

size_t dilated_attention_backward_workspace_bytes(const DilatedAttentionParams& p, ScalarType type,
                                                  bool offsets_grad) {
  return tensor_core_path(p, type, offsets_grad) ? sizeof(float) * tc_workspace_floats(p)
                                                 : cuda_core_workspace_bytes(p);
}

size_t dilated_attention_backward_workspace_bytes(const DilatedAttentionParams& p) {
  return std::max(sizeof(float) * tc_workspace_floats(p), cuda_core_workspace_bytes(p));
}

void dilated_attention_backward_cuda(const DilatedAttentionParams& p, ScalarType type,
                                     const void* q, const void* k, const void* v, const void* out,
                                     const float* lse, const void* grad_out, void* grad_q,
                                     void* grad_k, void* grad_v, double* grad_offsets,
                                     void* workspace, void* stream_ptr) {
  check_params(p);
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  if (p.out_heads != 0 && !tensor_core_path(p, type, grad_offsets != nullptr)) {
    throw std::invalid_argument(
        "dilated attention (CUDA): a token-major out / grad_out (out_heads > 0) needs the "
        "tensor-core backward (dilated_attention_uses_tensor_cores)");
  }
  if (tensor_core_path(p, type, grad_offsets != nullptr)) {
    if (p.head_dim == 64)
      tc_backward<64>(p, q, k, v, out, lse, grad_out, grad_q, grad_k, grad_v, grad_offsets,
                      workspace, stream);
    else
      tc_backward<128>(p, q, k, v, out, lse, grad_out, grad_q, grad_k, grad_v, grad_offsets,
                       workspace, stream);
    return;
  }
#define REACH_LAUNCH_BACKWARD(T, D)                                                           \
  launch_backward<T, D>(p, q, k, v, out, lse, grad_out, grad_q, grad_k, grad_v, grad_offsets, \
                        workspace, stream)
  if (type == ScalarType::kBFloat16) {
    if (p.head_dim == 64)
      REACH_LAUNCH_BACKWARD(__nv_bfloat16, 64);
    else
      REACH_LAUNCH_BACKWARD(__nv_bfloat16, 128);
  } else {
    if (p.head_dim == 64)
      REACH_LAUNCH_BACKWARD(float, 64);
    else
      REACH_LAUNCH_BACKWARD(float, 128);
  }
#undef REACH_LAUNCH_BACKWARD
}

}  // namespace reach::kernels::gpu
