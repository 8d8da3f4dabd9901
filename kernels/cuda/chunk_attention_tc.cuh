// Fast path of the CUDA chunk attention (included by chunk_attention.cu only): bf16 inputs,
// head_dim 64 or 128, chunk size S a multiple of 16 up to 64, top_k <= 16, retrieval_dim <= 512.
//
// Why chunk-centric: a query-centric kernel gathers one S x d key/value chunk per (query, slot)
// (n * k * 32 KiB of L2 traffic per group at S = 64, d = 128) and cannot feed the tensor cores,
// because no two queries share their chunk set. Turned around, every chunk has a list of the
// (query, slot) pairs that selected it (on average k * S of them), so a block loads the chunk's
// K and V once and runs 64-row tiles of those queries against it on the tensor cores
// (mma.sync m16n8k16 bf16, fp32 accumulation; the helpers of dilated_attention_tc.cuh),
// for every head of the GQA group in turn.
//
// Passes (all on the caller's stream, nothing n x n, no float atomics):
//  1. select_kernel: 64 queries per block score 32-landmark tiles held in shared memory
//     (fp32 CUDA cores: the scores must be the float32 dot products the indices are judged on);
//     4 threads per query keep register top-16 lists (full comparator: score descending, ties to
//     the lower chunk index), merged by quad arg-max rounds. Writes indices and weights.
//  2. build_lists: key (batch*group*chunk) per saved (query, slot), a stable CUB radix sort of
//     the (key, t * K + slot) pairs (so every list is in increasing query order, independent of
//     scheduling), segment offsets by binary search, and the split of each list into pieces of
//     at most kPieceEntries, so one popular chunk (an attention sink) cannot serialise a pass.
//  3. forward, per piece: S = Q K^T, the row softmax over the whole chunk (its lse is saved),
//     O = (w P) V with P as bf16 hi + lo (fp32-like precision), written as the (query, slot)
//     partial in fp32; reduce_slots then sums each query's partials in slot order.
//  4. backward, per piece: S and dP = dO V^T, delta = rowsum(P dP) (= dO . o_c, saved for the
//     weights' gradient), dS = w P (dP - delta); dq partials (dS K) per (query, slot); dK and dV
//     of the chunk summed over the piece's tiles and the group's heads in fp32 shared memory
//     (each warp owns 16 key rows: no atomics), one fp32 partial per piece, summed in piece order
//     by reduce_dkv. A query pass turns delta into dL/dw, dL/ds, dr; a landmark pass sums
//     dL/ds * r over each chunk's list in its fixed order.
// Every sum has a fixed order, so results are bitwise reproducible run to run.
#pragma once

#include <cuda_bf16.h>

#include <climits>
#include <cstdint>
#include <cub/cub.cuh>

#include "kernels/cuda/dilated_attention_tc.cuh"

namespace reach::kernels::gpu::chunk_tc {

using bf16 = __nv_bfloat16;
using tc::kThreads;  // 4 warps x 16 rows
using tc::kTile;     // 64 rows per tile

constexpr int kMaxK = 16;            // register top-k lists (kMaxChunkSlots)
constexpr int kMaxS = 64;            // keys of a chunk in one tile
constexpr int kPieceEntries = 512;   // (query, slot) pairs per block at most (8 tiles)
constexpr int kSelQueries = 64;      // queries per selection block
constexpr int kSelChunks = 32;       // landmarks per shared-memory tile
constexpr int kSelThreads = 256;     // 4 threads per query
constexpr int kPStride = kTile + 8;  // bf16 per row of the transposed P / dS tiles

struct Sizes {
  int n, s, k, dr, group, query_heads, kv_heads, chunks, segs, max_pieces;
  long long entries;  // B * Hkv * n * K
  float scale, scale_log2, retrieval_scale;
  pattern::ChunkSelection selection;
  int stick_breaking;
};

// ---- selection ----------------------------------------------------------------------

__device__ __forceinline__ bool better(float s1, int i1, float s2, int i2) {
  return s1 > s2 || (s1 == s2 && i1 < i2);
}

__device__ __forceinline__ float x_log_sigmoid(float x) {
  return x >= 0.f ? -log1pf(expf(-x)) : x - log1pf(expf(x));
}
// __fdividef: the IEEE division is a subroutine call (register saves).
__device__ __forceinline__ float x_sigmoid(float x) { return __fdividef(1.f, 1.f + expf(-x)); }

__device__ __forceinline__ float load_f(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float load_f(const bf16* p, long long i) {
  return __bfloat162float(p[i]);
}

// Chunk weights of one query from its selected scores (softmax or stick-breaking, nearest
// first), the formulas of the fallback kernel's chunk_weights.
__device__ void weights_of(int stick, const float* score, const int* idx, int m, float* w) {
  if (!stick) {
    float top = -INFINITY, total = 0.f;
    for (int c = 0; c < m; ++c) top = fmaxf(top, score[c]);
    for (int c = 0; c < m; ++c) total += (w[c] = expf(score[c] - top));
    for (int c = 0; c < m; ++c) w[c] = __fdividef(w[c], total);
    return;
  }
  for (int c = 0; c < m; ++c) {
    float lw = x_log_sigmoid(score[c]);
    for (int j = 0; j < m; ++j) {
      if (idx[j] > idx[c]) lw += x_log_sigmoid(-score[j]);
    }
    w[c] = expf(lw);
  }
}

// dL/ds of one query from dL/dw (chunk_weights_backward of the fallback kernel).
__device__ void weights_backward_of(int stick, const float* score, const int* idx, const float* w,
                                    const float* gw, int m, float* gs) {
  if (!stick) {
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
    gs[c] = gw[c] * w[c] * x_sigmoid(-score[c]) - x_sigmoid(score[c]) * farther;
  }
}

// Shared floats per row of the r / landmark tiles: dr rounded up to 4 (float4 loads), + 4 so
// the 8 query rows a warp reads fall in distinct banks.
__host__ __device__ inline int sel_stride(int dr) { return (dr + 3) / 4 * 4 + 4; }

__host__ inline size_t select_smem_bytes(int dr) {
  return sizeof(float) *
         (static_cast<size_t>(kSelQueries + kSelChunks) * sel_stride(dr) + 3 * kSelQueries * kMaxK);
}

// One block: queries t0 .. t0 + 63 of (batch, group) blockIdx.y.
template <typename T>
__global__ void __launch_bounds__(kSelThreads)
    select_kernel(Sizes a, const T* __restrict__ r, const T* __restrict__ landmarks,
                  int64_t* __restrict__ indices, float* __restrict__ weights) {
  extern __shared__ __align__(16) float sel_smem[];
  const int stride = sel_stride(a.dr);
  float* sr = sel_smem;
  float* sl = sr + kSelQueries * stride;
  float* s_score = sl + kSelChunks * stride;
  float* s_w = s_score + kSelQueries * kMaxK;
  int* s_idx = reinterpret_cast<int*>(s_w + kSelQueries * kMaxK);
  const int tid = threadIdx.x, qi = tid >> 2, sub = tid & 3;
  const int bg = blockIdx.y, t0 = blockIdx.x * kSelQueries;
  const long long rbase = static_cast<long long>(bg) * a.n;
  for (int i = tid; i < kSelQueries * stride; i += kSelThreads) {
    const int row = i / stride, e = i % stride, t = t0 + row;
    sr[i] = (t < a.n && e < a.dr) ? load_f(r, (rbase + t) * a.dr + e) : 0.f;
  }
  const int t = t0 + qi;
  const int cand = t < a.n ? pattern::candidate_chunks<int>(a.selection, t) : 0;
  const int m = static_cast<int>(pattern::selected_chunks(a.selection, cand));
  const int last_t = min(t0 + kSelQueries - 1, a.n - 1);
  const int cmax = pattern::candidate_chunks<int>(a.selection, last_t);  // monotone in t
  float ls[kMaxK];
  int li[kMaxK];
#pragma unroll
  for (int p = 0; p < kMaxK; ++p) ls[p] = -INFINITY, li[p] = INT_MAX;
  const T* lbg = landmarks + static_cast<long long>(bg) * a.chunks * a.dr;
  const float4* rrow = reinterpret_cast<const float4*>(sr + qi * stride);
  for (int c0 = 0; c0 < cmax; c0 += kSelChunks) {
    __syncthreads();  // the previous tile is consumed (and sr is complete on the first pass)
    for (int i = tid; i < kSelChunks * stride; i += kSelThreads) {
      const int row = i / stride, e = i % stride, c = c0 + row;
      sl[i] = (c < cmax && e < a.dr) ? load_f(lbg, static_cast<long long>(c) * a.dr + e) : 0.f;
    }
    __syncthreads();
    if (c0 >= cand) continue;  // nothing of this tile is a candidate of this query
    float acc[kSelChunks / 4];
#pragma unroll
    for (int j = 0; j < kSelChunks / 4; ++j) acc[j] = 0.f;
    for (int e4 = 0; e4 < stride / 4 - 1; ++e4) {
      const float4 x = rrow[e4];
#pragma unroll
      for (int j = 0; j < kSelChunks / 4; ++j) {
        const float4 y = reinterpret_cast<const float4*>(sl + (sub + 4 * j) * stride)[e4];
        acc[j] = fmaf(x.x, y.x, acc[j]);
        acc[j] = fmaf(x.y, y.y, acc[j]);
        acc[j] = fmaf(x.z, y.z, acc[j]);
        acc[j] = fmaf(x.w, y.w, acc[j]);
      }
    }
#pragma unroll
    for (int j = 0; j < kSelChunks / 4; ++j) {
      const int c = c0 + sub + 4 * j;
      float s = acc[j] * a.retrieval_scale;
      if (c >= cand || !better(s, c, ls[kMaxK - 1], li[kMaxK - 1])) continue;
      int ci = c;
#pragma unroll
      for (int p = 0; p < kMaxK; ++p) {  // insertion by compare-and-swap: stays in registers
        if (better(s, ci, ls[p], li[p])) {
          const float ts = ls[p];
          const int ti = li[p];
          ls[p] = s, li[p] = ci, s = ts, ci = ti;
        }
      }
    }
  }
  // Merge the quad's four lists: each round the best head wins and its owner shifts its list.
  for (int j = 0; j < a.k; ++j) {
    float bs = ls[0];
    int bi = li[0];
#pragma unroll
    for (int o = 1; o <= 2; o <<= 1) {
      const float os = __shfl_xor_sync(0xffffffffu, bs, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (better(os, oi, bs, bi)) bs = os, bi = oi;
    }
    if (li[0] == bi && bi != INT_MAX) {
#pragma unroll
      for (int p = 0; p < kMaxK - 1; ++p) ls[p] = ls[p + 1], li[p] = li[p + 1];
      ls[kMaxK - 1] = -INFINITY, li[kMaxK - 1] = INT_MAX;
    }
    if (sub == 0) s_score[qi * kMaxK + j] = bs, s_idx[qi * kMaxK + j] = bi;
  }
  if (sub != 0 || t >= a.n) return;
  int found = 0;  // m unless some score was NaN (never inserted)
  while (found < m && s_idx[qi * kMaxK + found] != INT_MAX) ++found;
  weights_of(a.stick_breaking, s_score + qi * kMaxK, s_idx + qi * kMaxK, found, s_w + qi * kMaxK);
  const long long row = (rbase + t) * a.k;
  for (int j = 0; j < a.k; ++j) {
    indices[row + j] = j < found ? s_idx[qi * kMaxK + j] : -1;
    weights[row + j] = j < found ? s_w[qi * kMaxK + j] : 0.f;
  }
}

// ---- lists --------------------------------------------------------------------------

// Entry e = (bg * n + t) * K + slot: key bg * chunks + chunk (a.segs when empty), value t * K +
// slot (bg is implied by the key).
__global__ void list_keys_kernel(Sizes a, const int64_t* __restrict__ indices,
                                 int* __restrict__ keys, int* __restrict__ values) {
  const long long per_bg = static_cast<long long>(a.n) * a.k;
  for (long long e = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; e < a.entries;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int64_t c = indices[e];
    const int bg = static_cast<int>(e / per_bg);
    keys[e] = (c >= 0 && c < a.chunks) ? bg * a.chunks + static_cast<int>(c) : a.segs;
    values[e] = static_cast<int>(e % per_bg);
  }
}

// seg_off[s] = the first sorted entry with key >= s (s = 0 .. segs).
__global__ void list_offsets_kernel(Sizes a, const int* __restrict__ sorted_keys,
                                    int* __restrict__ seg_off) {
  const int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s > a.segs) return;
  long long lo = 0, hi = a.entries;
  while (lo < hi) {
    const long long mid = (lo + hi) / 2;
    if (sorted_keys[mid] < s)
      lo = mid + 1;
    else
      hi = mid;
  }
  seg_off[s] = static_cast<int>(lo);
}

// pieces[s]: the pieces of list s, 0 at s = segs (the exclusive scan then ends with the total).
__global__ void list_pieces_kernel(Sizes a, const int* __restrict__ seg_off,
                                   int* __restrict__ pieces) {
  const int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s > a.segs) return;
  pieces[s] = s == a.segs ? 0 : (seg_off[s + 1] - seg_off[s] + kPieceEntries - 1) / kPieceEntries;
}

// The list piece of block `piece`: its segment (the largest s with piece_off[s] <= piece) and
// its entry range. False for blocks past the last piece (the grid is an upper bound).
struct Piece {
  int seg, first, count;
};

__device__ __forceinline__ bool find_piece(const Sizes& a, const int* seg_off, const int* piece_off,
                                           int piece, Piece& out) {
  if (piece >= piece_off[a.segs]) return false;
  int lo = 0, hi = a.segs - 1;
  while (lo < hi) {  // largest s with piece_off[s] <= piece
    const int mid = (lo + hi + 1) / 2;
    if (piece_off[mid] <= piece)
      lo = mid;
    else
      hi = mid - 1;
  }
  out.seg = lo;
  out.first = seg_off[lo] + (piece - piece_off[lo]) * kPieceEntries;
  out.count = min(kPieceEntries, seg_off[lo + 1] - out.first);
  return true;
}

// ---- tiles --------------------------------------------------------------------------

template <int D>
using Shape = tc::Shape<D>;

// The chunk's S key (or value) rows into a 64-row padded tile; rows >= S are zeros.
template <int D>
__device__ __forceinline__ void load_chunk_tile(bf16* dst, const bf16* src, int s) {
  using Sh = Shape<D>;
#pragma unroll
  for (int it = 0; it < kTile * Sh::kChunks / kThreads; ++it) {
    const int idx = it * kThreads + static_cast<int>(threadIdx.x);
    const int r = idx / Sh::kChunks, ch = idx % Sh::kChunks;
    const bool valid = r < s;
    tc::cp_async16(dst + r * Sh::kStride + ch * 8,
                   src + static_cast<size_t>(valid ? r : 0) * D + ch * 8, valid);
  }
}

// Rows t of head `head` (a [n, D] matrix) for the 64 entries of a tile; t < 0: zeros.
template <int D>
__device__ __forceinline__ void gather_tile(bf16* dst, const bf16* head, const int* s_t) {
  using Sh = Shape<D>;
#pragma unroll
  for (int it = 0; it < kTile * Sh::kChunks / kThreads; ++it) {
    const int idx = it * kThreads + static_cast<int>(threadIdx.x);
    const int r = idx / Sh::kChunks, ch = idx % Sh::kChunks;
    const int t = s_t[r];
    tc::cp_async16(dst + r * Sh::kStride + ch * 8,
                   head + static_cast<size_t>(t >= 0 ? t : 0) * D + ch * 8, t >= 0);
  }
}

// Metadata of a piece's entries: query t (-1 past the end, padded to whole tiles), slot, weight.
__device__ __forceinline__ void load_piece_meta(const Sizes& a, const Piece& pc, int bg,
                                                const int* sorted_values, const float* weights,
                                                int* s_t, int* s_slot, float* s_w) {
  const int padded = (pc.count + kTile - 1) / kTile * kTile;
  for (int i = threadIdx.x; i < padded; i += kThreads) {
    if (i < pc.count) {
      const int e = sorted_values[pc.first + i];
      const int t = e / a.k, slot = e % a.k;
      s_t[i] = t;
      s_slot[i] = slot;
      s_w[i] = weights[(static_cast<long long>(bg) * a.n + t) * a.k + slot];
    } else {
      s_t[i] = -1;
      s_slot[i] = 0;
      s_w[i] = 0.f;
    }
  }
}

// Scores of a warp's 16 rows against the chunk's key blocks kb < S / 16 (s[2 kb], s[2 kb + 1]).
template <int D>
__device__ __forceinline__ void chunk_scores(float (&s)[8][4],
                                             const uint32_t (&qa)[Shape<D>::kHeld][4],
                                             const bf16* sQ, const bf16* sK, int nkb, int wrow,
                                             int lane) {
  tc::zero_tiles(s);
#pragma unroll
  for (int kb = 0; kb < 4; ++kb) {
    if (kb >= nkb) continue;
#pragma unroll
    for (int ks = 0; ks < Shape<D>::kKSteps; ++ks) {
      uint32_t af[4], b[4];
      tc::a_fragment<D>(af, qa, sQ, wrow, ks, lane);
      tc::ldmatrix_x4(b, sK + (16 * kb + (lane & 7) + (lane >> 4) * 8) * Shape<D>::kStride +
                             ks * 16 + ((lane >> 3) & 1) * 8);
      tc::mma(s[2 * kb], af, b[0], b[1]);
      tc::mma(s[2 * kb + 1], af, b[2], b[3]);
    }
  }
}

// ---- forward ------------------------------------------------------------------------

template <int D>
constexpr size_t forward_smem_bytes() {
  return 4 * Shape<D>::kTileElems * sizeof(bf16) + kPieceEntries * 3 * sizeof(int);
}

// partial[((bh * n + t) * K + slot) * D + e] = w (P V)[e] of the entry; lse[(bh * n + t) * K +
// slot] (natural log) when lse is not null.
template <int D>
__global__ void __launch_bounds__(kThreads)
    chunk_forward_kernel(Sizes a, const bf16* __restrict__ q, const bf16* __restrict__ k,
                         const bf16* __restrict__ v, const int* __restrict__ sorted_values,
                         const int* __restrict__ seg_off, const int* __restrict__ piece_off,
                         const float* __restrict__ weights, float* __restrict__ lse,
                         float* __restrict__ partial) {
  using Sh = Shape<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sK = reinterpret_cast<bf16*>(smem);
  bf16* sV = sK + Sh::kTileElems;
  bf16* sQ = sV + Sh::kTileElems;  // two stages
  int* s_t = reinterpret_cast<int*>(sQ + 2 * Sh::kTileElems);
  int* s_slot = s_t + kPieceEntries;
  float* s_w = reinterpret_cast<float*>(s_slot + kPieceEntries);
  Piece pc;
  if (!find_piece(a, seg_off, piece_off, blockIdx.x, pc)) return;
  const int bg = pc.seg / a.chunks, chunk = pc.seg % a.chunks;
  const int b = bg / a.kv_heads, g = bg % a.kv_heads;
  const size_t kv_off = (static_cast<size_t>(bg) * a.n + static_cast<size_t>(chunk) * a.s) * D;
  load_chunk_tile<D>(sK, k + kv_off, a.s);
  load_chunk_tile<D>(sV, v + kv_off, a.s);
  load_piece_meta(a, pc, bg, sorted_values, weights, s_t, s_slot, s_w);
  __syncthreads();
  const int tiles = (pc.count + kTile - 1) / kTile, iters = tiles * a.group;
  auto head_of = [&](int it) { return b * a.query_heads + g * a.group + it % a.group; };
  gather_tile<D>(sQ, q + static_cast<size_t>(head_of(0)) * a.n * D, s_t);
  tc::cp_async_commit();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gr = lane / 4, c = lane % 4;
  const int wrow = 16 * warp, nkb = a.s / 16;
  for (int it = 0; it < iters; ++it) {
    if (it + 1 < iters) {  // prefetch the next (tile, head)'s queries into the other stage
      gather_tile<D>(sQ + ((it + 1) & 1) * Sh::kTileElems,
                     q + static_cast<size_t>(head_of(it + 1)) * a.n * D,
                     s_t + (it + 1) / a.group * kTile);
      tc::cp_async_commit();
      tc::cp_async_wait<1>();
    } else {
      tc::cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* tQ = sQ + (it & 1) * Sh::kTileElems;
    const int base = it / a.group * kTile, bh = head_of(it);
    uint32_t qa[Sh::kHeld][4];
    tc::hold_fragments<D>(qa, tQ, wrow, lane);
    float s[8][4];
    chunk_scores<D>(s, qa, tQ, sK, nkb, wrow, lane);
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = 8 * nt + 2 * c + (e & 1);
        s[nt][e] = j < a.s ? s[nt][e] * a.scale_log2 : -INFINITY;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[nt][e]);
      }
    }
    float l[2] = {0.f, 0.f};
#pragma unroll
    for (int r = 0; r < 2; ++r) mx[r] = tc::quad_max(mx[r]);
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nt][e] = exp2f(s[nt][e] - mx[e >> 1]);
        l[e >> 1] += s[nt][e];
      }
    }
    int row_t[2], row_slot[2];
    float factor[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l[r] = tc::quad_sum(l[r]);
      const int i = base + wrow + gr + 8 * r;
      row_t[r] = s_t[i];
      row_slot[r] = s_slot[i];
      factor[r] = s_w[i] / l[r];
      if (lse != nullptr && c == 0 && row_t[r] >= 0) {
        lse[(static_cast<long long>(bh) * a.n + row_t[r]) * a.k + row_slot[r]] =
            (mx[r] + log2f(l[r])) * tc::kLn2;
      }
    }
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] *= factor[e >> 1];
    }
    float o[Sh::kNTiles][4];
    tc::zero_tiles(o);
#pragma unroll
    for (int kb = 0; kb < 4; ++kb) {
      if (kb >= nkb) continue;
      uint32_t hi[4], lo[4];
      tc::to_a_fragment(s[2 * kb], s[2 * kb + 1], hi, lo);
      tc::accumulate_block<D>(o, hi, lo, sV, 16 * kb, lane);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      if (row_t[r] < 0) continue;
      float* dst =
          partial + ((static_cast<long long>(bh) * a.n + row_t[r]) * a.k + row_slot[r]) * D;
#pragma unroll
      for (int nt = 0; nt < Sh::kNTiles; ++nt) {
        *reinterpret_cast<float2*>(dst + 8 * nt + 2 * c) =
            make_float2(o[nt][2 * r], o[nt][2 * r + 1]);
      }
    }
    __syncthreads();  // this stage is refilled by the next iteration's prefetch
  }
}

// dst row (bh, t) = sum over its filled slots, in slot order, of partial rows (times factor);
// zeros when no slot is filled. Also zeroes lse of empty slots when lse is not null.
template <int D>
__global__ void reduce_slots_kernel(Sizes a, int batch, const int64_t* __restrict__ indices,
                                    const float* __restrict__ partial, bf16* __restrict__ dst,
                                    float factor, float* __restrict__ lse) {
  constexpr int kQuads = D / 4;
  const long long rows = static_cast<long long>(batch) * a.query_heads * a.n;
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < rows * kQuads; i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long row = i / kQuads;
    const int e4 = static_cast<int>(i % kQuads);
    const int t = static_cast<int>(row % a.n);
    const long long bh = row / a.n;
    const int b = static_cast<int>(bh / a.query_heads), h = static_cast<int>(bh % a.query_heads);
    const long long sel = ((static_cast<long long>(b) * a.kv_heads + h / a.group) * a.n + t) * a.k;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int slot = 0; slot < a.k; ++slot) {
      if (indices[sel + slot] < 0) {
        if (lse != nullptr && e4 == 0) lse[row * a.k + slot] = 0.f;
        continue;
      }
      const float4 x = reinterpret_cast<const float4*>(partial + (row * a.k + slot) * D)[e4];
      acc.x += x.x, acc.y += x.y, acc.z += x.z, acc.w += x.w;
    }
    uint2 packed;
    packed.x = tc::pack_bf16(acc.x * factor, acc.y * factor);
    packed.y = tc::pack_bf16(acc.z * factor, acc.w * factor);
    reinterpret_cast<uint2*>(dst + row * D)[e4] = packed;
  }
}

// ---- backward -----------------------------------------------------------------------

template <int D>
constexpr size_t backward_smem_bytes() {
  return 6 * Shape<D>::kTileElems * sizeof(bf16)  // K, V, Q x 2, dO x 2
         + 4 * kTile * kPStride * sizeof(bf16)    // (w P)^T and dS^T, hi + lo
         + 2 * kTile * (D + 4) * sizeof(float)    // dK, dV accumulators
         + kPieceEntries * 3 * sizeof(int);
}

// A fragment (16 rows from row0, 16 columns from col0) of a [64][kPStride] bf16 tile.
__device__ __forceinline__ void p_fragment(uint32_t (&dst)[4], const bf16* tile, int row0, int col0,
                                           int lane) {
  tc::ldmatrix_x4(
      dst, tile + (row0 + (lane & 7) + ((lane >> 3) & 1) * 8) * kPStride + col0 + (lane >> 4) * 8);
}

// acc (a warp's 16 key rows x D, fp32 in shared memory) += X^T B over the tile's 64 entries,
// X^T given as hi / lo bf16 tiles [key][entry], B the entries' rows of a padded tile.
template <int D>
__device__ __forceinline__ void accumulate_keys(float* acc, const bf16* xt_hi, const bf16* xt_lo,
                                                const bf16* b_tile, int wrow, int lane) {
  using Sh = Shape<D>;
  const int gr = lane / 4, c = lane % 4;
  float x[Sh::kNTiles][4];
#pragma unroll
  for (int nt = 0; nt < Sh::kNTiles; ++nt) {
    const float2 u = *reinterpret_cast<const float2*>(acc + (wrow + gr) * (D + 4) + 8 * nt + 2 * c);
    const float2 w =
        *reinterpret_cast<const float2*>(acc + (wrow + gr + 8) * (D + 4) + 8 * nt + 2 * c);
    x[nt][0] = u.x, x[nt][1] = u.y, x[nt][2] = w.x, x[nt][3] = w.y;
  }
#pragma unroll
  for (int eb = 0; eb < kTile / 16; ++eb) {
    uint32_t hi[4], lo[4];
    p_fragment(hi, xt_hi, wrow, 16 * eb, lane);
    p_fragment(lo, xt_lo, wrow, 16 * eb, lane);
    tc::accumulate_block<D>(x, hi, lo, b_tile, 16 * eb, lane);
  }
#pragma unroll
  for (int nt = 0; nt < Sh::kNTiles; ++nt) {
    *reinterpret_cast<float2*>(acc + (wrow + gr) * (D + 4) + 8 * nt + 2 * c) =
        make_float2(x[nt][0], x[nt][1]);
    *reinterpret_cast<float2*>(acc + (wrow + gr + 8) * (D + 4) + 8 * nt + 2 * c) =
        make_float2(x[nt][2], x[nt][3]);
  }
}

// Stores x (a warp's 16 entry rows x 64 keys, mma layout) transposed as bf16 hi + lo.
__device__ __forceinline__ void store_transposed(const float (&x)[8][4], bf16* hi, bf16* lo,
                                                 int wrow, int lane) {
  const int gr = lane / 4, c = lane % 4;
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int j = 8 * nt + 2 * c + (e & 1), i = wrow + gr + 8 * (e >> 1);
      const bf16 h = __float2bfloat16_rn(x[nt][e]);
      hi[j * kPStride + i] = h;
      lo[j * kPStride + i] = __float2bfloat16_rn(x[nt][e] - __bfloat162float(h));
    }
  }
}

// Per piece: dq_part rows (scale dS K, one per entry and head), delta[(bh n + t) K + slot] =
// dO . o_c, and the piece's dK (times scale) and dV rows in dkv_part[piece][2][64][D].
template <int D>
__global__ void __launch_bounds__(kThreads)
    chunk_backward_kernel(Sizes a, const bf16* __restrict__ q, const bf16* __restrict__ k,
                          const bf16* __restrict__ v, const bf16* __restrict__ grad_out,
                          const int* __restrict__ sorted_values, const int* __restrict__ seg_off,
                          const int* __restrict__ piece_off, const float* __restrict__ weights,
                          const float* __restrict__ lse, float* __restrict__ dq_part,
                          float* __restrict__ delta_out, float* __restrict__ dkv_part) {
  using Sh = Shape<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sK = reinterpret_cast<bf16*>(smem);
  bf16* sV = sK + Sh::kTileElems;
  bf16* sQ = sV + Sh::kTileElems;      // two stages
  bf16* sG = sQ + 2 * Sh::kTileElems;  // two stages
  bf16* sPh = sG + 2 * Sh::kTileElems;
  bf16* sPl = sPh + kTile * kPStride;
  bf16* sDh = sPl + kTile * kPStride;
  bf16* sDl = sDh + kTile * kPStride;
  float* accK = reinterpret_cast<float*>(sDl + kTile * kPStride);
  float* accV = accK + kTile * (D + 4);
  int* s_t = reinterpret_cast<int*>(accV + kTile * (D + 4));
  int* s_slot = s_t + kPieceEntries;
  float* s_w = reinterpret_cast<float*>(s_slot + kPieceEntries);
  Piece pc;
  if (!find_piece(a, seg_off, piece_off, blockIdx.x, pc)) return;
  const int bg = pc.seg / a.chunks, chunk = pc.seg % a.chunks;
  const int b = bg / a.kv_heads, g = bg % a.kv_heads;
  const size_t kv_off = (static_cast<size_t>(bg) * a.n + static_cast<size_t>(chunk) * a.s) * D;
  load_chunk_tile<D>(sK, k + kv_off, a.s);
  load_chunk_tile<D>(sV, v + kv_off, a.s);
  for (int i = threadIdx.x; i < 2 * kTile * (D + 4); i += kThreads) accK[i] = 0.f;  // accV too
  load_piece_meta(a, pc, bg, sorted_values, weights, s_t, s_slot, s_w);
  __syncthreads();
  const int tiles = (pc.count + kTile - 1) / kTile, iters = tiles * a.group;
  auto head_of = [&](int it) { return b * a.query_heads + g * a.group + it % a.group; };
  auto issue = [&](int it) {
    const size_t off = static_cast<size_t>(head_of(it)) * a.n * D;
    const int* ts = s_t + it / a.group * kTile;
    gather_tile<D>(sQ + (it & 1) * Sh::kTileElems, q + off, ts);
    gather_tile<D>(sG + (it & 1) * Sh::kTileElems, grad_out + off, ts);
    tc::cp_async_commit();
  };
  issue(0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gr = lane / 4, c = lane % 4;
  const int wrow = 16 * warp, nkb = a.s / 16;
  constexpr float kLog2e = tc::kLog2e;
  for (int it = 0; it < iters; ++it) {
    if (it + 1 < iters) {
      issue(it + 1);
      tc::cp_async_wait<1>();
    } else {
      tc::cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* tQ = sQ + (it & 1) * Sh::kTileElems;
    const bf16* tG = sG + (it & 1) * Sh::kTileElems;
    const int base = it / a.group * kTile, bh = head_of(it);
    // Entry phase: this warp's 16 entries against the chunk.
    {
      uint32_t qa[Sh::kHeld][4], ga[Sh::kHeld][4];
      tc::hold_fragments<D>(qa, tQ, wrow, lane);
      tc::hold_fragments<D>(ga, tG, wrow, lane);
      float s[8][4], dp[8][4];
      tc::zero_tiles(s);
      tc::zero_tiles(dp);
#pragma unroll
      for (int kb = 0; kb < 4; ++kb) {
        if (kb >= nkb) continue;
        float x[2][4], y[2][4];
        tc::zero_tiles(x);
        tc::zero_tiles(y);
        tc::two_score_blocks<D>(x, y, qa, tQ, ga, tG, wrow, sK, sV, 16 * kb, lane);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[2 * kb][e] = x[0][e], s[2 * kb + 1][e] = x[1][e];
          dp[2 * kb][e] = y[0][e], dp[2 * kb + 1][e] = y[1][e];
        }
      }
      int row_t[2], row_slot[2];
      float w[2], lse2[2], dl[2] = {0.f, 0.f};
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int i = base + wrow + gr + 8 * r;
        row_t[r] = s_t[i];
        row_slot[r] = s_slot[i];
        w[r] = s_w[i];
        lse2[r] =
            row_t[r] >= 0
                ? lse[(static_cast<long long>(bh) * a.n + row_t[r]) * a.k + row_slot[r]] * kLog2e
                : INFINITY;  // exp2(-inf): a padding row has P = 0
      }
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int j = 8 * nt + 2 * c + (e & 1);
          const float p = j < a.s ? exp2f(s[nt][e] * a.scale_log2 - lse2[e >> 1]) : 0.f;
          s[nt][e] = p;
          dl[e >> 1] += p * dp[nt][e];
        }
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        dl[r] = tc::quad_sum(dl[r]);
        if (c == 0 && row_t[r] >= 0) {
          delta_out[(static_cast<long long>(bh) * a.n + row_t[r]) * a.k + row_slot[r]] = dl[r];
        }
      }
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float wr = w[e >> 1];
          dp[nt][e] = wr * s[nt][e] * (dp[nt][e] - dl[e >> 1]);  // dS (before scale)
          s[nt][e] *= wr;                                        // w P
        }
      }
      store_transposed(s, sPh, sPl, wrow, lane);
      store_transposed(dp, sDh, sDl, wrow, lane);
      float dq[Sh::kNTiles][4];
      tc::zero_tiles(dq);
#pragma unroll
      for (int kb = 0; kb < 4; ++kb) {
        if (kb >= nkb) continue;
        uint32_t hi[4], lo[4];
        tc::to_a_fragment(dp[2 * kb], dp[2 * kb + 1], hi, lo);
        tc::accumulate_block<D>(dq, hi, lo, sK, 16 * kb, lane);
      }
      const float scale = a.scale;
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        if (row_t[r] < 0) continue;
        float* dst =
            dq_part + ((static_cast<long long>(bh) * a.n + row_t[r]) * a.k + row_slot[r]) * D;
#pragma unroll
        for (int nt = 0; nt < Sh::kNTiles; ++nt) {
          *reinterpret_cast<float2*>(dst + 8 * nt + 2 * c) =
              make_float2(scale * dq[nt][2 * r], scale * dq[nt][2 * r + 1]);
        }
      }
    }
    __syncthreads();  // the transposed P and dS tiles are complete
    // Key phase: this warp's 16 key rows, over the tile's 64 entries.
    if (wrow < a.s) {
      accumulate_keys<D>(accV, sPh, sPl, tG, wrow, lane);
      accumulate_keys<D>(accK, sDh, sDl, tQ, wrow, lane);
    }
    __syncthreads();  // stage it & 1 and the transposed tiles are reused
  }
  const float scale = a.scale;
  float* out = dkv_part + static_cast<size_t>(blockIdx.x) * 2 * kTile * D;
  for (int i = threadIdx.x; i < kTile * D / 4; i += kThreads) {
    const int row = i / (D / 4), e4 = i % (D / 4);
    float4 x = *reinterpret_cast<const float4*>(accK + row * (D + 4) + 4 * e4);
    x.x *= scale, x.y *= scale, x.z *= scale, x.w *= scale;
    reinterpret_cast<float4*>(out)[i] = x;
    reinterpret_cast<float4*>(out + kTile * D)[i] =
        *reinterpret_cast<const float4*>(accV + row * (D + 4) + 4 * e4);
  }
}

// grad_k / grad_v rows: the sum over the chunk's pieces in piece order (zeros for a chunk
// nobody selected and for the rows of a trailing partial chunk).
template <int D>
__global__ void reduce_dkv_kernel(Sizes a, int batch, const int* __restrict__ piece_off,
                                  const float* __restrict__ dkv_part, bf16* __restrict__ grad_k,
                                  bf16* __restrict__ grad_v) {
  constexpr int kQuads = D / 4;
  const long long rows = static_cast<long long>(batch) * a.kv_heads * a.n;
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < rows * kQuads; i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long row = i / kQuads;
    const int e4 = static_cast<int>(i % kQuads);
    const int t = static_cast<int>(row % a.n), bg = static_cast<int>(row / a.n);
    float4 dk = make_float4(0.f, 0.f, 0.f, 0.f), dv = dk;
    if (t < a.chunks * a.s) {
      const int seg = bg * a.chunks + t / a.s, j = t % a.s;
      for (int p = piece_off[seg]; p < piece_off[seg + 1]; ++p) {
        const float* part = dkv_part + static_cast<size_t>(p) * 2 * kTile * D + j * D;
        const float4 x = reinterpret_cast<const float4*>(part)[e4];
        const float4 y = reinterpret_cast<const float4*>(part + kTile * D)[e4];
        dk.x += x.x, dk.y += x.y, dk.z += x.z, dk.w += x.w;
        dv.x += y.x, dv.y += y.y, dv.z += y.z, dv.w += y.w;
      }
    }
    uint2 pk, pv;
    pk.x = tc::pack_bf16(dk.x, dk.y), pk.y = tc::pack_bf16(dk.z, dk.w);
    pv.x = tc::pack_bf16(dv.x, dv.y), pv.y = tc::pack_bf16(dv.z, dv.w);
    reinterpret_cast<uint2*>(grad_k + row * D)[e4] = pk;
    reinterpret_cast<uint2*>(grad_v + row * D)[e4] = pv;
  }
}

constexpr int kQueryWarps = 4;

// One warp per (batch, group, query): the selected scores, dL/dw = sum over the group's heads
// of delta, dL/ds (into gs, 0 in empty slots) and grad_r.
__global__ void __launch_bounds__(32 * kQueryWarps)
    query_backward_kernel(Sizes a, long long rows, const bf16* __restrict__ r,
                          const bf16* __restrict__ landmarks, const int64_t* __restrict__ indices,
                          const float* __restrict__ weights, const float* __restrict__ delta,
                          float* __restrict__ gs_out, bf16* __restrict__ grad_r) {
  __shared__ float s_score[kQueryWarps][kMaxK], s_w[kQueryWarps][kMaxK], s_gw[kQueryWarps][kMaxK],
      s_gs[kQueryWarps][kMaxK];
  __shared__ int s_idx[kQueryWarps][kMaxK];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long row = static_cast<long long>(blockIdx.x) * kQueryWarps + warp;
  if (row >= rows) return;
  const int bg = static_cast<int>(row / a.n), t = static_cast<int>(row % a.n);
  const int b = bg / a.kv_heads, g = bg % a.kv_heads;
  constexpr int kPer = 16;  // retrieval_dim <= 512 = 32 lanes x 16
  float rv[kPer];
#pragma unroll
  for (int u = 0; u < kPer; ++u) {
    const int e = lane + 32 * u;
    rv[u] = e < a.dr ? __bfloat162float(r[row * a.dr + e]) : 0.f;
  }
  int m = 0;
  while (m < a.k && indices[row * a.k + m] >= 0) ++m;
  const bf16* lbg = landmarks + static_cast<long long>(bg) * a.chunks * a.dr;
  for (int cs = 0; cs < m; ++cs) {
    const int idx = static_cast<int>(indices[row * a.k + cs]);
    float s = 0.f;
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int e = lane + 32 * u;
      if (e < a.dr) s += rv[u] * __bfloat162float(lbg[static_cast<long long>(idx) * a.dr + e]);
    }
    s = tc::warp_sum(s) * a.retrieval_scale;
    float gw = 0.f;
    for (int h = 0; h < a.group; ++h) {
      const long long bh = static_cast<long long>(b) * a.query_heads + g * a.group + h;
      gw += delta[(bh * a.n + t) * a.k + cs];
    }
    if (lane == 0) {
      s_score[warp][cs] = s;
      s_idx[warp][cs] = idx;
      s_w[warp][cs] = weights[row * a.k + cs];
      s_gw[warp][cs] = gw;
    }
  }
  __syncwarp();
  if (lane == 0) {
    weights_backward_of(a.stick_breaking, s_score[warp], s_idx[warp], s_w[warp], s_gw[warp], m,
                        s_gs[warp]);
  }
  __syncwarp();
  for (int cs = lane; cs < a.k; cs += 32) gs_out[row * a.k + cs] = cs < m ? s_gs[warp][cs] : 0.f;
  float acc[kPer];
#pragma unroll
  for (int u = 0; u < kPer; ++u) acc[u] = 0.f;
  for (int cs = 0; cs < m; ++cs) {
    const long long at = static_cast<long long>(s_idx[warp][cs]) * a.dr;
    const float gsc = s_gs[warp][cs];
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int e = lane + 32 * u;
      if (e < a.dr) acc[u] += gsc * __bfloat162float(lbg[at + e]);
    }
  }
#pragma unroll
  for (int u = 0; u < kPer; ++u) {
    const int e = lane + 32 * u;
    if (e < a.dr) grad_r[row * a.dr + e] = __float2bfloat16_rn(a.retrieval_scale * acc[u]);
  }
}

constexpr int kLandmarkWarps = 4;

// One block per (batch, group, chunk): grad_landmarks row = retrieval_scale * sum over the list
// of gs * r_t; warp w takes entries w, w + 4, ... and the warps' sums are added in warp order.
__global__ void __launch_bounds__(32 * kLandmarkWarps)
    landmark_backward_kernel(Sizes a, const bf16* __restrict__ r,
                             const int* __restrict__ sorted_values, const int* __restrict__ seg_off,
                             const float* __restrict__ gs, bf16* __restrict__ grad_l) {
  constexpr int kPer = 16;
  __shared__ float part[kLandmarkWarps][32 * kPer];
  const int seg = blockIdx.x, bg = seg / a.chunks;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float acc[kPer];
#pragma unroll
  for (int u = 0; u < kPer; ++u) acc[u] = 0.f;
  const long long rbase = static_cast<long long>(bg) * a.n;
  for (int i = seg_off[seg] + warp; i < seg_off[seg + 1]; i += kLandmarkWarps) {
    const int e = sorted_values[i];
    const int t = e / a.k;
    const float x = gs[rbase * a.k + e];
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int d = lane + 32 * u;
      if (d < a.dr) acc[u] += x * __bfloat162float(r[(rbase + t) * a.dr + d]);
    }
  }
#pragma unroll
  for (int u = 0; u < kPer; ++u) part[warp][lane + 32 * u] = acc[u];
  __syncthreads();
  for (int d = threadIdx.x; d < a.dr; d += 32 * kLandmarkWarps) {
    float x = 0.f;
    for (int w = 0; w < kLandmarkWarps; ++w) x += part[w][d];
    grad_l[static_cast<long long>(seg) * a.dr + d] = __float2bfloat16_rn(a.retrieval_scale * x);
  }
}

}  // namespace reach::kernels::gpu::chunk_tc
