#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <climits>
#include <stdexcept>
#include <string>

#include "kernels/cuda/chunk_attention.hpp"

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
__device__ __forceinline__ float log_sigmoid(float x) {
  return x >= 0.f ? -log1pf(expf(-x)) : x - log1pf(expf(x));
}
// __fdividef: the IEEE division is a subroutine call, whose register saves spill here.
__device__ __forceinline__ float sigmoid(float x) { return __fdividef(1.f, 1.f + expf(-x)); }

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
  if (!a.stick_breaking) {
    float top = -INFINITY, total = 0.f;
    for (int c = 0; c < m; ++c) top = fmaxf(top, score[c]);
    for (int c = 0; c < m; ++c) total += (w[c] = expf(score[c] - top));
    for (int c = 0; c < m; ++c) w[c] = __fdividef(w[c], total);
    return;
  }
  for (int c = 0; c < m; ++c) {  // nearest (highest index) chunk first
    float lw = log_sigmoid(score[c]);
    for (int j = 0; j < m; ++j) {
      if (idx[j] > idx[c]) lw += log_sigmoid(-score[j]);
    }
    w[c] = expf(lw);
  }
}

// dL/ds from dL/dw (one lane).
__device__ void chunk_weights_backward(const Args& a, const float* score, const int* idx,
                                       const float* w, const float* gw, int m, float* gs) {
  if (!a.stick_breaking) {
    float mean = 0.f;
    for (int c = 0; c < m; ++c) mean += w[c] * gw[c];
    for (int c = 0; c < m; ++c) gs[c] = w[c] * (gw[c] - mean);
    return;
  }
  for (int c = 0; c < m; ++c) {
    float farther = 0.f;
    for (int j = 0; j < m; ++j) {
      if (idx[j] < idx[c]) farther += gw[j] * w[j];
    }
    gs[c] = gw[c] * w[c] * sigmoid(-score[c]) - sigmoid(score[c]) * farther;
  }
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

void chunk_attention_forward_cuda(const ChunkAttentionParams& p, ScalarType type, const void* q,
                                  const void* k, const void* v, const void* r,
                                  const void* landmarks, void* out, int64_t* indices,
                                  float* weights, float* lse, void* stream) {
  const Args a = make_args(p);
  const bool save = indices != nullptr;
  if (save != (weights != nullptr) || save != (lse != nullptr)) {
    throw std::invalid_argument(
        "chunk_attention: indices, weights and lse must all be given or all be null");
  }
  auto s = static_cast<cudaStream_t>(stream);
  const bool bf16 = type == ScalarType::kBFloat16;
  if (p.head_dim == 64) {
    bf16 ? forward_typed<__nv_bfloat16, 64>(a, q, k, v, r, landmarks, out, indices, weights, lse, s)
         : forward_typed<float, 64>(a, q, k, v, r, landmarks, out, indices, weights, lse, s);
  } else {
    bf16
        ? forward_typed<__nv_bfloat16, 128>(a, q, k, v, r, landmarks, out, indices, weights, lse, s)
        : forward_typed<float, 128>(a, q, k, v, r, landmarks, out, indices, weights, lse, s);
  }
}

size_t chunk_attention_backward_workspace_bytes(const ChunkAttentionParams& p) {
  const int64_t kv = p.batch * p.kv_heads * p.seq_len * p.head_dim;
  const int64_t lm = p.batch * p.kv_heads * p.chunks() * p.retrieval_dim;
  return sizeof(float) * static_cast<size_t>(2 * kv + lm) + 16;
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
