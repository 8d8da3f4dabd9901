#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cuda/chunk_attention.hpp"
#include "kernels/cuda/chunk_attention_tc.cuh"

namespace reach::kernels::gpu {
namespace {

constexpr int kWarps = 4;  // queries (warps) per block
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ void store(float* p, int64_t i, float x) { p[i] = x; }
__device__ __forceinline__ void store(__nv_bfloat16* p, int64_t i, float x) {
  p[i] = __float2bfloat16(x);
}

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(kFull, x, o);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(kFull, x, o));
  return x;
}

// Launch arguments: sizes and scales computed on the host.
struct Args {
  pattern::ChunkSelection selection;
  int stick_breaking;
  int64_t n, dr, s, k, group, query_heads, kv_heads, chunks, rows;
  float scale, retrieval_scale;
  int warp_floats;  // shared floats per warp
};

// Per-warp shared memory: q[D] g[D] r[dr] p[S] dp[S] score[K] w[K] gw[K] gs[K] idx[K], and
// each lane's top-k list, list_score[K][32] list_index[K][32] (entry (pos, lane) at pos * 32 +
// lane: no bank conflicts).
template <int D>
struct Smem {
  float *q, *g, *r, *p, *dp, *score, *w, *gw, *gs, *list_score;
  int *idx, *list_index;
  __device__ Smem(float* base, const Args& a) {
    q = base;
    g = q + D;
    r = g + D;
    p = r + a.dr;
    dp = p + a.s;
    score = dp + a.s;
    w = score + a.k;
    gw = w + a.k;
    gs = gw + a.k;
    idx = reinterpret_cast<int*>(gs + a.k);
    list_score = gs + 2 * a.k;
    list_index = reinterpret_cast<int*>(list_score + 32 * a.k);
  }
};

// Top-k of one query into idx/score (slot order: score descending, ties lower index first).
// Lane l keeps the best of candidates l, l + 32, ... in its list (ls/li, stride 32), then k
// rounds of a warp arg-max merge the lists.
template <typename T>
__device__ int select_chunks(const Args& a, const float* r_s, const T* l_bg, int t, int lane,
                             float* ls, int* li, float* score, int* idx) {
  const int candidates = pattern::candidate_chunks<int>(a.selection, t);
  const int m = static_cast<int>(pattern::selected_chunks(a.selection, candidates));
  ls += lane;
  li += lane;
  int count = 0;
  for (int i = lane; i < candidates; i += 32) {
    float s = 0.f;
    for (int64_t e = 0; e < a.dr; ++e) s += r_s[e] * load(l_bg, i * a.dr + e);
    s *= a.retrieval_scale;
    if (count == m && !(s > ls[32 * (m - 1)])) continue;
    int pos = count < m ? count++ : m - 1;
    while (pos > 0 && s > ls[32 * (pos - 1)]) {
      ls[32 * pos] = ls[32 * (pos - 1)];
      li[32 * pos] = li[32 * (pos - 1)];
      --pos;
    }
    ls[32 * pos] = s;
    li[32 * pos] = i;
  }
  int head = 0;
  for (int j = 0; j < m; ++j) {
    float bs = head < count ? ls[32 * head] : -INFINITY;
    int bi = head < count ? li[32 * head] : INT_MAX;
    for (int o = 16; o > 0; o >>= 1) {
      const float os = __shfl_xor_sync(kFull, bs, o);
      const int oi = __shfl_xor_sync(kFull, bi, o);
      if (os > bs || (os == bs && oi < bi)) bs = os, bi = oi;
    }
    if (head < count && li[32 * head] == bi) ++head;
    if (lane == 0) score[j] = bs, idx[j] = bi;
  }
  __syncwarp();
  return m;
}

// Chunk weights from the selected scores (one lane).
__device__ void chunk_weights(const Args& a, const float* score, const int* idx, int m, float* w) {
  chunk_tc::weights_of(a.stick_breaking, score, idx, m, w);  // one formula for both paths
}

// dL/ds from dL/dw (one lane).
__device__ void chunk_weights_backward(const Args& a, const float* score, const int* idx,
                                       const float* w, const float* gw, int m, float* gs) {
  chunk_tc::weights_backward_of(a.stick_breaking, score, idx, w, gw, m, gs);
}

template <typename T, int D>
__global__ void chunk_forward_kernel(Args a, const T* __restrict__ q, const T* __restrict__ k,
                                     const T* __restrict__ v, const T* __restrict__ r,
                                     const T* __restrict__ landmarks, T* __restrict__ out,
                                     int64_t* __restrict__ indices, float* __restrict__ weights,
                                     float* __restrict__ lse) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (row >= a.rows) return;
  Smem<D> sm(smem + warp * a.warp_floats, a);
  // 32-bit index arithmetic (rows < 2^31 is checked on the host).
  const int row32 = static_cast<int>(row), n32 = static_cast<int>(a.n);
  const int kvh = static_cast<int>(a.kv_heads);
  const int64_t bg = row32 / n32, b = bg / kvh, g = bg % kvh;
  const int t = row32 % n32;
  for (int64_t e = lane; e < a.dr; e += 32) sm.r[e] = load(r, row * a.dr + e);
  __syncwarp();
  const int m = select_chunks(a, sm.r, landmarks + bg * a.chunks * a.dr, t, lane, sm.list_score,
                              sm.list_index, sm.score, sm.idx);
  if (lane == 0) chunk_weights(a, sm.score, sm.idx, m, sm.w);
  __syncwarp();
  const bool save = indices != nullptr;
  if (save) {
    for (int64_t c = lane; c < a.k; c += 32) {
      indices[row * a.k + c] = c < m ? sm.idx[c] : -1;
      weights[row * a.k + c] = c < m ? sm.w[c] : 0.f;
    }
  }
  constexpr int kPer = D / 32;
  for (int64_t h = g * a.group; h < (g + 1) * a.group; ++h) {
    const int64_t qrow = (b * a.query_heads + h) * a.n + t;
    for (int e = lane; e < D; e += 32) sm.q[e] = load(q, qrow * D + e);
    __syncwarp();
    float acc[kPer];
    for (int u = 0; u < kPer; ++u) acc[u] = 0.f;
    for (int c = 0; c < m; ++c) {
      const int64_t base = (bg * a.n + static_cast<int64_t>(sm.idx[c]) * a.s) * D;
      float top = -INFINITY;
      for (int64_t j = lane; j < a.s; j += 32) {
        float z = 0.f;
#pragma unroll 8
        for (int e = 0; e < D; ++e) z += sm.q[e] * load(k, base + j * D + e);
        z *= a.scale;
        sm.p[j] = z;
        top = fmaxf(top, z);
      }
      top = warp_max(top);
      float total = 0.f;
      for (int64_t j = lane; j < a.s; j += 32) total += expf(sm.p[j] - top);
      const float l = top + logf(warp_sum(total));
      for (int64_t j = lane; j < a.s; j += 32) sm.p[j] = expf(sm.p[j] - l);
      __syncwarp();
      const float wc = sm.w[c];
      for (int u = 0; u < kPer; ++u) {
        const int e = lane + 32 * u;
        float o = 0.f;
        for (int64_t j = 0; j < a.s; ++j) o += sm.p[j] * load(v, base + j * D + e);
        acc[u] += wc * o;
      }
      __syncwarp();
      if (save && lane == 0) lse[qrow * a.k + c] = l;
    }
    if (save) {
      for (int64_t c = m + lane; c < a.k; c += 32) lse[qrow * a.k + c] = 0.f;
    }
    for (int u = 0; u < kPer; ++u) store(out, qrow * D + lane + 32 * u, acc[u]);
    __syncwarp();
  }
}

template <typename T, int D>
__global__ void chunk_backward_kernel(
    Args a, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const T* __restrict__ r, const T* __restrict__ landmarks, const T* __restrict__ grad_out,
    const int64_t* __restrict__ indices, const float* __restrict__ weights,
    const float* __restrict__ lse, T* __restrict__ grad_q, T* __restrict__ grad_r,
    float* __restrict__ dk_ws, float* __restrict__ dv_ws, float* __restrict__ dl_ws) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (row >= a.rows) return;
  Smem<D> sm(smem + warp * a.warp_floats, a);
  // 32-bit index arithmetic (rows < 2^31 is checked on the host).
  const int row32 = static_cast<int>(row), n32 = static_cast<int>(a.n);
  const int kvh = static_cast<int>(a.kv_heads);
  const int64_t bg = row32 / n32, b = bg / kvh, g = bg % kvh;
  const int t = row32 % n32;
  const T* l_bg = landmarks + bg * a.chunks * a.dr;
  for (int64_t e = lane; e < a.dr; e += 32) sm.r[e] = load(r, row * a.dr + e);
  int m = 0;
  while (m < a.k && indices[row * a.k + m] >= 0) ++m;
  for (int c = lane; c < m; c += 32) {
    sm.idx[c] = static_cast<int>(indices[row * a.k + c]);
    sm.w[c] = weights[row * a.k + c];
    sm.gw[c] = 0.f;
  }
  __syncwarp();
  for (int c = 0; c < m; ++c) {  // the selected scores, for the weights' backward
    float s = 0.f;
    for (int64_t e = lane; e < a.dr; e += 32) {
      s += sm.r[e] * load(l_bg, static_cast<int64_t>(sm.idx[c]) * a.dr + e);
    }
    s = warp_sum(s) * a.retrieval_scale;
    if (lane == 0) sm.score[c] = s;
  }
  constexpr int kPer = D / 32;
  for (int64_t h = g * a.group; h < (g + 1) * a.group; ++h) {
    const int64_t qrow = (b * a.query_heads + h) * a.n + t;
    for (int e = lane; e < D; e += 32) {
      sm.q[e] = load(q, qrow * D + e);
      sm.g[e] = load(grad_out, qrow * D + e);
    }
    __syncwarp();
    float dq[kPer];
    for (int u = 0; u < kPer; ++u) dq[u] = 0.f;
    for (int c = 0; c < m; ++c) {
      const int64_t base = (bg * a.n + static_cast<int64_t>(sm.idx[c]) * a.s) * D;
      const float l = lse[qrow * a.k + c], wc = sm.w[c];
      float delta = 0.f;  // dO . o_c
      for (int64_t j = lane; j < a.s; j += 32) {
        float z = 0.f, dp = 0.f;
#pragma unroll 8
        for (int e = 0; e < D; ++e) {
          z += sm.q[e] * load(k, base + j * D + e);
          dp += sm.g[e] * load(v, base + j * D + e);
        }
        const float pj = expf(z * a.scale - l);
        sm.p[j] = pj;
        sm.dp[j] = dp;
        delta += pj * dp;
      }
      delta = warp_sum(delta);
      if (lane == 0) sm.gw[c] += delta;
      for (int64_t j = lane; j < a.s; j += 32) sm.dp[j] = wc * sm.p[j] * (sm.dp[j] - delta);
      __syncwarp();
      for (int u = 0; u < kPer; ++u) {
        const int e = lane + 32 * u;
        const float qe = sm.q[e] * a.scale, ge = sm.g[e] * wc;
        float acc = 0.f;
        for (int64_t j = 0; j < a.s; ++j) {
          const int64_t at = base + j * D + e;
          acc += sm.dp[j] * load(k, at);
          atomicAdd(dv_ws + at, sm.p[j] * ge);
          atomicAdd(dk_ws + at, sm.dp[j] * qe);
        }
        dq[u] += acc;
      }
      __syncwarp();
    }
    for (int u = 0; u < kPer; ++u) store(grad_q, qrow * D + lane + 32 * u, a.scale * dq[u]);
    __syncwarp();
  }
  if (lane == 0) chunk_weights_backward(a, sm.score, sm.idx, sm.w, sm.gw, m, sm.gs);
  __syncwarp();
  for (int64_t e = lane; e < a.dr; e += 32) {
    float acc = 0.f;
    for (int c = 0; c < m; ++c) {
      const int64_t at = (bg * a.chunks + sm.idx[c]) * a.dr + e;
      acc += sm.gs[c] * load(landmarks, at);
      atomicAdd(dl_ws + at, a.retrieval_scale * sm.gs[c] * sm.r[e]);
    }
    store(grad_r, row * a.dr + e, a.retrieval_scale * acc);
  }
}

template <typename T>
__global__ void convert_kernel(const float* __restrict__ from, T* __restrict__ to, int64_t size) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < size;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    store(to, i, from[i]);
  }
}

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("chunk_attention (CUDA) ") + what + ": " +
                             cudaGetErrorString(status));
  }
}

Args make_args(const ChunkAttentionParams& p) {
  const std::string problem = validate_chunk_params(p);
  if (!problem.empty()) throw std::invalid_argument("chunk_attention: " + problem);
  const std::string unsupported = chunk_cuda_support_problem(p);
  if (!unsupported.empty()) throw std::invalid_argument("chunk_attention (CUDA): " + unsupported);
  Args a;
  a.selection = p.selection;
  a.stick_breaking = p.weighting == ChunkWeighting::stick_breaking;
  a.n = p.seq_len;
  a.dr = p.retrieval_dim;
  a.s = p.selection.chunk_size;
  a.k = p.slots();
  a.group = p.group_size();
  a.query_heads = p.query_heads;
  a.kv_heads = p.kv_heads;
  a.chunks = p.chunks();
  a.rows = p.batch * p.kv_heads * p.seq_len;
  a.scale = static_cast<float>(p.scale);
  a.retrieval_scale = static_cast<float>(p.retrieval_scale);
  a.warp_floats = static_cast<int>(2 * p.head_dim + a.dr + 2 * a.s + 5 * a.k + 64 * a.k);
  return a;
}

unsigned blocks_for(const Args& a) { return static_cast<unsigned>((a.rows + kWarps - 1) / kWarps); }
size_t smem_bytes(const Args& a) { return sizeof(float) * kWarps * a.warp_floats; }

template <typename T, int D>
void forward_typed(const Args& a, const void* q, const void* k, const void* v, const void* r,
                   const void* l, void* out, int64_t* indices, float* weights, float* lse,
                   cudaStream_t stream) {
  chunk_forward_kernel<T, D><<<blocks_for(a), 32 * kWarps, smem_bytes(a), stream>>>(
      a, static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
      static_cast<const T*>(r), static_cast<const T*>(l), static_cast<T*>(out), indices, weights,
      lse);
  check_cuda(cudaGetLastError(), "forward launch");
}

template <typename T, int D>
void backward_typed(const ChunkAttentionParams& p, const Args& a, const void* q, const void* k,
                    const void* v, const void* r, const void* l, const void* go,
                    const int64_t* indices, const float* weights, const float* lse, void* gq,
                    void* gk, void* gv, void* gr, void* gl, float* ws, cudaStream_t stream) {
  const int64_t kv = p.batch * p.kv_heads * p.seq_len * p.head_dim;
  const int64_t lm = p.batch * p.kv_heads * a.chunks * a.dr;
  float *dk = ws, *dv = ws + kv, *dl = ws + 2 * kv;
  check_cuda(cudaMemsetAsync(ws, 0, sizeof(float) * (2 * kv + lm), stream), "workspace clear");
  chunk_backward_kernel<T, D><<<blocks_for(a), 32 * kWarps, smem_bytes(a), stream>>>(
      a, static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
      static_cast<const T*>(r), static_cast<const T*>(l), static_cast<const T*>(go), indices,
      weights, lse, static_cast<T*>(gq), static_cast<T*>(gr), dk, dv, dl);
  check_cuda(cudaGetLastError(), "backward launch");
  auto convert = [&](const float* from, void* to, int64_t size) {
    if (size == 0) return;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((size + 255) / 256, 4096));
    convert_kernel<T><<<blocks, 256, 0, stream>>>(from, static_cast<T*>(to), size);
    check_cuda(cudaGetLastError(), "convert launch");
  };
  convert(dk, gk, kv);
  convert(dv, gv, kv);
  convert(dl, gl, lm);
}

// ---- tensor-core path (chunk_attention_tc.cuh) ----------------------------------------

namespace ct = chunk_tc;

bool fast_path(const ChunkAttentionParams& p, ScalarType type) {
  const int64_t s = p.selection.chunk_size;
  return type == ScalarType::kBFloat16 && s % 16 == 0 && s <= ct::kMaxS &&
         p.selection.top_k <= ct::kMaxK &&
         p.batch * p.kv_heads * p.seq_len * p.selection.top_k < INT_MAX;
}

ct::Sizes make_sizes(const ChunkAttentionParams& p) {
  ct::Sizes a;
  a.n = static_cast<int>(p.seq_len);
  a.s = static_cast<int>(p.selection.chunk_size);
  a.k = static_cast<int>(p.slots());
  a.dr = static_cast<int>(p.retrieval_dim);
  a.group = static_cast<int>(p.group_size());
  a.query_heads = static_cast<int>(p.query_heads);
  a.kv_heads = static_cast<int>(p.kv_heads);
  a.chunks = static_cast<int>(p.chunks());
  a.segs = static_cast<int>(p.batch * p.kv_heads * p.chunks());
  a.entries = p.batch * p.kv_heads * p.seq_len * p.slots();
  a.max_pieces = a.segs + static_cast<int>((a.entries + ct::kPieceEntries - 1) / ct::kPieceEntries);
  a.scale = static_cast<float>(p.scale);
  a.scale_log2 = static_cast<float>(p.scale * 1.4426950408889634);
  a.retrieval_scale = static_cast<float>(p.retrieval_scale);
  a.selection = p.selection;
  a.stick_breaking = p.weighting == ChunkWeighting::stick_breaking;
  return a;
}

int key_bits(const ct::Sizes& a) {  // keys are 0 .. segs (segs: empty slot)
  int bits = 1;
  while ((1ll << bits) <= a.segs) ++bits;
  return bits;
}

size_t align256(size_t x) { return (x + 255) / 256 * 256; }

// Byte offsets of the fast path's workspace (forward or backward).
struct FastLayout {
  size_t indices = 0, weights = 0, keys_in = 0, keys_out = 0, values_in = 0, values_out = 0,
         seg_off = 0, pieces = 0, piece_off = 0, temp = 0, temp_bytes = 0, partial = 0, delta = 0,
         gs = 0, dkv = 0, total = 0;
};

FastLayout fast_layout(const ChunkAttentionParams& p, bool backward, bool own_selection) {
  const ct::Sizes a = make_sizes(p);
  const int entries = static_cast<int>(a.entries);
  size_t sort_bytes = 0, scan_bytes = 0;
  check_cuda(
      cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, static_cast<const int*>(nullptr),
                                      static_cast<int*>(nullptr), static_cast<const int*>(nullptr),
                                      static_cast<int*>(nullptr), entries, 0, key_bits(a)),
      "sort size");
  check_cuda(cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, static_cast<int*>(nullptr),
                                           static_cast<int*>(nullptr), a.segs + 1),
             "scan size");
  FastLayout l;
  size_t at = 0;
  auto take = [&](size_t bytes) {
    const size_t here = at;
    at += align256(bytes);
    return here;
  };
  const size_t e = static_cast<size_t>(a.entries);
  const size_t per_head_slot = static_cast<size_t>(p.batch * p.query_heads * p.seq_len * a.k);
  if (own_selection) {
    l.indices = take(e * sizeof(int64_t));
    l.weights = take(e * sizeof(float));
  }
  l.keys_in = take(e * sizeof(int));
  l.keys_out = take(e * sizeof(int));
  l.values_in = take(e * sizeof(int));
  l.values_out = take(e * sizeof(int));
  l.seg_off = take((a.segs + 1) * sizeof(int));
  l.pieces = take((a.segs + 1) * sizeof(int));
  l.piece_off = take((a.segs + 1) * sizeof(int));
  l.temp_bytes = std::max(sort_bytes, scan_bytes);
  l.temp = take(l.temp_bytes);
  l.partial = take(per_head_slot * p.head_dim * sizeof(float));  // out or dq partials
  if (backward) {
    l.delta = take(per_head_slot * sizeof(float));
    l.gs = take(e * sizeof(float));
    l.dkv = take(static_cast<size_t>(a.max_pieces) * 2 * ct::kTile * p.head_dim * sizeof(float));
  }
  l.total = at + 256;  // the base may be only 16-byte aligned
  return l;
}

char* aligned_base(void* workspace) {
  const auto x = reinterpret_cast<uintptr_t>(workspace);
  return reinterpret_cast<char*>((x + 255) / 256 * 256);
}

unsigned grid_for(long long work, int threads) {
  return static_cast<unsigned>(
      std::max<long long>(1, std::min<long long>((work + threads - 1) / threads, 1 << 16)));
}

// The sorted (query, slot) lists of every (batch, group, chunk) and their pieces.
void build_lists(const ct::Sizes& a, const FastLayout& l, char* ws, const int64_t* indices,
                 cudaStream_t stream) {
  int* keys_in = reinterpret_cast<int*>(ws + l.keys_in);
  int* keys_out = reinterpret_cast<int*>(ws + l.keys_out);
  int* values_in = reinterpret_cast<int*>(ws + l.values_in);
  int* values_out = reinterpret_cast<int*>(ws + l.values_out);
  int* seg_off = reinterpret_cast<int*>(ws + l.seg_off);
  int* pieces = reinterpret_cast<int*>(ws + l.pieces);
  int* piece_off = reinterpret_cast<int*>(ws + l.piece_off);
  ct::list_keys_kernel<<<grid_for(a.entries, 256), 256, 0, stream>>>(a, indices, keys_in,
                                                                     values_in);
  check_cuda(cudaGetLastError(), "list keys launch");
  size_t temp_bytes = l.temp_bytes;
  check_cuda(cub::DeviceRadixSort::SortPairs(ws + l.temp, temp_bytes, keys_in, keys_out, values_in,
                                             values_out, static_cast<int>(a.entries), 0,
                                             key_bits(a), stream),
             "list sort");
  const unsigned seg_blocks = static_cast<unsigned>((a.segs + 1 + 255) / 256);
  ct::list_offsets_kernel<<<seg_blocks, 256, 0, stream>>>(a, keys_out, seg_off);
  check_cuda(cudaGetLastError(), "list offsets launch");
  ct::list_pieces_kernel<<<seg_blocks, 256, 0, stream>>>(a, seg_off, pieces);
  check_cuda(cudaGetLastError(), "list pieces launch");
  temp_bytes = l.temp_bytes;
  check_cuda(
      cub::DeviceScan::ExclusiveSum(ws + l.temp, temp_bytes, pieces, piece_off, a.segs + 1, stream),
      "piece scan");
}

template <typename K>
void allow_smem(K kernel, size_t bytes) {
  if (bytes > 48 * 1024) {
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(bytes)),
               "shared memory opt-in");
  }
}

template <int D>
void fast_forward(const ChunkAttentionParams& p, const void* q, const void* k, const void* v,
                  const void* r, const void* landmarks, void* out, int64_t* indices, float* weights,
                  float* lse, void* workspace, cudaStream_t stream) {
  using bf16 = __nv_bfloat16;
  const ct::Sizes a = make_sizes(p);
  const bool own = indices == nullptr;
  const FastLayout l = fast_layout(p, false, own);
  char* ws = aligned_base(workspace);
  if (own) {
    indices = reinterpret_cast<int64_t*>(ws + l.indices);
    weights = reinterpret_cast<float*>(ws + l.weights);
  }
  const size_t sel_smem = ct::select_smem_bytes(a.dr);
  allow_smem(ct::select_kernel<bf16>, sel_smem);
  const dim3 sel_grid(static_cast<unsigned>((a.n + ct::kSelQueries - 1) / ct::kSelQueries),
                      static_cast<unsigned>(p.batch * p.kv_heads));
  ct::select_kernel<bf16><<<sel_grid, ct::kSelThreads, sel_smem, stream>>>(
      a, static_cast<const bf16*>(r), static_cast<const bf16*>(landmarks), indices, weights);
  check_cuda(cudaGetLastError(), "select launch");
  build_lists(a, l, ws, indices, stream);
  float* partial = reinterpret_cast<float*>(ws + l.partial);
  constexpr size_t smem = ct::forward_smem_bytes<D>();
  allow_smem(ct::chunk_forward_kernel<D>, smem);
  ct::chunk_forward_kernel<D><<<static_cast<unsigned>(a.max_pieces), ct::kThreads, smem, stream>>>(
      a, static_cast<const bf16*>(q), static_cast<const bf16*>(k), static_cast<const bf16*>(v),
      reinterpret_cast<const int*>(ws + l.values_out), reinterpret_cast<const int*>(ws + l.seg_off),
      reinterpret_cast<const int*>(ws + l.piece_off), weights, lse, partial);
  check_cuda(cudaGetLastError(), "chunk forward launch");
  const long long rows = p.batch * p.query_heads * p.seq_len;
  ct::reduce_slots_kernel<D><<<grid_for(rows * (D / 4), 256), 256, 0, stream>>>(
      a, static_cast<int>(p.batch), indices, partial, static_cast<bf16*>(out), 1.f, lse);
  check_cuda(cudaGetLastError(), "slot reduce launch");
}

template <int D>
void fast_backward(const ChunkAttentionParams& p, const void* q, const void* k, const void* v,
                   const void* r, const void* landmarks, const void* grad_out,
                   const int64_t* indices, const float* weights, const float* lse, void* grad_q,
                   void* grad_k, void* grad_v, void* grad_r, void* grad_landmarks, void* workspace,
                   cudaStream_t stream) {
  using bf16 = __nv_bfloat16;
  const ct::Sizes a = make_sizes(p);
  const FastLayout l = fast_layout(p, true, false);
  char* ws = aligned_base(workspace);
  build_lists(a, l, ws, indices, stream);
  const int* values = reinterpret_cast<const int*>(ws + l.values_out);
  const int* seg_off = reinterpret_cast<const int*>(ws + l.seg_off);
  const int* piece_off = reinterpret_cast<const int*>(ws + l.piece_off);
  float* dq_part = reinterpret_cast<float*>(ws + l.partial);
  float* delta = reinterpret_cast<float*>(ws + l.delta);
  float* gs = reinterpret_cast<float*>(ws + l.gs);
  float* dkv = reinterpret_cast<float*>(ws + l.dkv);
  constexpr size_t smem = ct::backward_smem_bytes<D>();
  allow_smem(ct::chunk_backward_kernel<D>, smem);
  ct::chunk_backward_kernel<D><<<static_cast<unsigned>(a.max_pieces), ct::kThreads, smem, stream>>>(
      a, static_cast<const bf16*>(q), static_cast<const bf16*>(k), static_cast<const bf16*>(v),
      static_cast<const bf16*>(grad_out), values, seg_off, piece_off, weights, lse, dq_part, delta,
      dkv);
  check_cuda(cudaGetLastError(), "chunk backward launch");
  const long long qrows = p.batch * p.query_heads * p.seq_len;
  ct::reduce_slots_kernel<D><<<grid_for(qrows * (D / 4), 256), 256, 0, stream>>>(
      a, static_cast<int>(p.batch), indices, dq_part, static_cast<bf16*>(grad_q), 1.f, nullptr);
  check_cuda(cudaGetLastError(), "dq reduce launch");
  const long long kvrows = p.batch * p.kv_heads * p.seq_len;
  ct::reduce_dkv_kernel<D><<<grid_for(kvrows * (D / 4), 256), 256, 0, stream>>>(
      a, static_cast<int>(p.batch), piece_off, dkv, static_cast<bf16*>(grad_k),
      static_cast<bf16*>(grad_v));
  check_cuda(cudaGetLastError(), "dk/dv reduce launch");
  ct::query_backward_kernel<<<static_cast<unsigned>((kvrows + ct::kQueryWarps - 1) /
                                                    ct::kQueryWarps),
                              32 * ct::kQueryWarps, 0, stream>>>(
      a, kvrows, static_cast<const bf16*>(r), static_cast<const bf16*>(landmarks), indices, weights,
      delta, gs, static_cast<bf16*>(grad_r));
  check_cuda(cudaGetLastError(), "query backward launch");
  if (a.segs > 0) {
    ct::landmark_backward_kernel<<<static_cast<unsigned>(a.segs), 32 * ct::kLandmarkWarps, 0,
                                   stream>>>(a, static_cast<const bf16*>(r), values, seg_off, gs,
                                             static_cast<bf16*>(grad_landmarks));
    check_cuda(cudaGetLastError(), "landmark backward launch");
  }
}

size_t fallback_backward_bytes(const ChunkAttentionParams& p) {
  const int64_t kv = p.batch * p.kv_heads * p.seq_len * p.head_dim;
  const int64_t lm = p.batch * p.kv_heads * p.chunks() * p.retrieval_dim;
  return sizeof(float) * static_cast<size_t>(2 * kv + lm) + 16;
}

}  // namespace

std::string chunk_cuda_support_problem(const ChunkAttentionParams& p) {
  if (p.head_dim != 64 && p.head_dim != 128) {
    return "head_dim must be 64 or 128, got " + std::to_string(p.head_dim);
  }
  if (p.selection.top_k > kMaxChunkSlots) {
    return "top-k must be <= " + std::to_string(kMaxChunkSlots) + ", got " +
           std::to_string(p.selection.top_k);
  }
  if (p.selection.chunk_size > kMaxChunkSize) {
    return "chunk size must be <= " + std::to_string(kMaxChunkSize) + ", got " +
           std::to_string(p.selection.chunk_size);
  }
  if (p.retrieval_dim > kMaxRetrievalDim) {
    return "retrieval_dim must be <= " + std::to_string(kMaxRetrievalDim) + ", got " +
           std::to_string(p.retrieval_dim);
  }
  if (p.batch * p.kv_heads * p.seq_len >= INT_MAX) {
    return "batch * kv_heads * n must be < 2^31 (32-bit indexing)";
  }
  return {};
}

bool chunk_attention_uses_tensor_cores(const ChunkAttentionParams& p, ScalarType type) {
  return chunk_cuda_support_problem(p).empty() && fast_path(p, type);
}

size_t chunk_attention_forward_workspace_bytes(const ChunkAttentionParams& p, ScalarType type,
                                               bool inference) {
  if (!chunk_attention_uses_tensor_cores(p, type)) return 16;
  return fast_layout(p, false, inference).total;
}

void chunk_attention_forward_cuda(const ChunkAttentionParams& p, ScalarType type, const void* q,
                                  const void* k, const void* v, const void* r,
                                  const void* landmarks, void* out, int64_t* indices,
                                  float* weights, float* lse, void* workspace, void* stream) {
  const Args a = make_args(p);
  const bool save = indices != nullptr;
  if (save != (weights != nullptr) || save != (lse != nullptr)) {
    throw std::invalid_argument(
        "chunk_attention: indices, weights and lse must all be given or all be null");
  }
  auto s = static_cast<cudaStream_t>(stream);
  const bool bf16 = type == ScalarType::kBFloat16;
  if (fast_path(p, type)) {
    if (workspace == nullptr) {
      throw std::invalid_argument("chunk_attention (CUDA): the tensor-core path needs a workspace");
    }
    p.head_dim == 64
        ? fast_forward<64>(p, q, k, v, r, landmarks, out, indices, weights, lse, workspace, s)
        : fast_forward<128>(p, q, k, v, r, landmarks, out, indices, weights, lse, workspace, s);
    return;
  }
  if (p.head_dim == 64) {
    bf16 ? forward_typed<__nv_bfloat16, 64>(a, q, k, v, r, landmarks, out, indices, weights, lse, s)
         : forward_typed<float, 64>(a, q, k, v, r, landmarks, out, indices, weights, lse, s);
  } else {
    bf16
        ? forward_typed<__nv_bfloat16, 128>(a, q, k, v, r, landmarks, out, indices, weights, lse, s)
        : forward_typed<float, 128>(a, q, k, v, r, landmarks, out, indices, weights, lse, s);
  }
}

void chunk_attention_forward_cuda(const ChunkAttentionParams& p, ScalarType type, const void* q,
                                  const void* k, const void* v, const void* r,
                                  const void* landmarks, void* out, int64_t* indices,
                                  float* weights, float* lse, void* stream) {
  make_args(p);  // throws on bad params before anything is allocated
  auto s = static_cast<cudaStream_t>(stream);
  void* workspace = nullptr;
  if (fast_path(p, type)) {
    const size_t bytes = chunk_attention_forward_workspace_bytes(p, type, indices == nullptr);
    check_cuda(cudaMallocAsync(&workspace, bytes, s), "forward workspace");
  }
  try {
    chunk_attention_forward_cuda(p, type, q, k, v, r, landmarks, out, indices, weights, lse,
                                 workspace, stream);
  } catch (...) {
    if (workspace != nullptr) cudaFreeAsync(workspace, s);
    throw;
  }
  if (workspace != nullptr) check_cuda(cudaFreeAsync(workspace, s), "forward workspace free");
}

size_t chunk_attention_backward_workspace_bytes(const ChunkAttentionParams& p, ScalarType type) {
  if (chunk_attention_uses_tensor_cores(p, type)) return fast_layout(p, true, false).total;
  return fallback_backward_bytes(p);
}

size_t chunk_attention_backward_workspace_bytes(const ChunkAttentionParams& p) {
  return std::max(chunk_attention_backward_workspace_bytes(p, ScalarType::kFloat32),
                  chunk_attention_backward_workspace_bytes(p, ScalarType::kBFloat16));
}

void chunk_attention_backward_cuda(const ChunkAttentionParams& p, ScalarType type, const void* q,
                                   const void* k, const void* v, const void* r,
                                   const void* landmarks, const void* grad_out,
                                   const int64_t* indices, const float* weights, const float* lse,
                                   void* grad_q, void* grad_k, void* grad_v, void* grad_r,
                                   void* grad_landmarks, void* workspace, void* stream) {
  const Args a = make_args(p);
  auto s = static_cast<cudaStream_t>(stream);
  auto* ws = static_cast<float*>(workspace);
  const bool bf16 = type == ScalarType::kBFloat16;
  if (fast_path(p, type)) {
    p.head_dim == 64
        ? fast_backward<64>(p, q, k, v, r, landmarks, grad_out, indices, weights, lse, grad_q,
                            grad_k, grad_v, grad_r, grad_landmarks, workspace, s)
        : fast_backward<128>(p, q, k, v, r, landmarks, grad_out, indices, weights, lse, grad_q,
                             grad_k, grad_v, grad_r, grad_landmarks, workspace, s);
    return;
  }
  if (p.head_dim == 64) {
    bf16 ? backward_typed<__nv_bfloat16, 64>(p, a, q, k, v, r, landmarks, grad_out, indices,
                                             weights, lse, grad_q, grad_k, grad_v, grad_r,
                                             grad_landmarks, ws, s)
         : backward_typed<float, 64>(p, a, q, k, v, r, landmarks, grad_out, indices, weights, lse,
                                     grad_q, grad_k, grad_v, grad_r, grad_landmarks, ws, s);
  } else {
    bf16 ? backward_typed<__nv_bfloat16, 128>(p, a, q, k, v, r, landmarks, grad_out, indices,
                                              weights, lse, grad_q, grad_k, grad_v, grad_r,
                                              grad_landmarks, ws, s)
         : backward_typed<float, 128>(p, a, q, k, v, r, landmarks, grad_out, indices, weights, lse,
                                      grad_q, grad_k, grad_v, grad_r, grad_landmarks, ws, s);
  }
}

}  // namespace reach::kernels::gpu
