// Tensor-core path of the CUDA dilated attention (included by dilated_attention.cu only):
// bf16 inputs, head_dim 64 or 128, integer offsets, no offset gradient.
//
// A block owns a tile of 64 consecutive queries (forward, dq pass) or keys (dk/dv pass);
// each of its 4 warps owns 16 rows. The block streams 64-row chunks of the other side
// (K and V, or Q and dO) through a 2-stage cp.async pipeline and feeds them to the
// tensor cores (mma.sync m16n8k16 bf16, fp32 accumulation), one online softmax over all:
//  * window chunks: the band around the tile's diagonal, as small dense blocks,
//    FlashAttention-2 style, skipping 16-column blocks a warp's rows cannot see;
//  * one chunk per offset d: rows t0 - d .. t0 - d + 63, one contiguous block (coalesced
//    16-byte copies). Query t0 + r pairs with chunk row r only, a diagonal: each warp
//    computes its 16 x 16 block of scores, keeps the diagonal, and multiplies the
//    diagonal matrix of probabilities into the chunk's rows on the tensor cores too.
//    That wastes tensor-core flops (idle otherwise) and saves the CUDA-core work of
//    per-row dot products, which bound the previous version.
//
// Backward without atomics: a query pass (dq) that recomputes P from the forward's
// log-sum-exp, computes delta_i = dO_i . O_i and stores P and dS for the offset slots
// only (8 bytes per query and offset), then a key pass (dk, dv) that recomputes the
// band blocks transposed and reads P and dS for its offset slots.
//
// Probabilities and score gradients enter the mma as bf16 hi + lo pairs (two mmas), so
// rounding P or dS to bf16 costs no accuracy: the results keep fp32-like error and only
// the final outputs are rounded to bf16.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace reach::kernels::gpu::tc {

using bf16 = __nv_bfloat16;

constexpr int kTile = 64;      // rows per block
constexpr int kThreads = 128;  // 4 warps x 16 rows
constexpr bool kSplit = true;  // P and dS as bf16 hi + lo (see above)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct IntOffsets {
  int count;
  int d[kMaxOffsets];
};

template <int D>
struct Shape {
  static constexpr int kStride = D + 8;  // bf16 per smem row: +16 B keeps ldmatrix conflict-free
  static constexpr int kTileElems = kTile * kStride;
  static constexpr int kChunks = D / 8;      // 16-byte chunks per row
  static constexpr int kRowChunks = D / 32;  // chunks per lane in the row layout (quad per row)
  static constexpr int kKSteps = D / 16;     // k16 steps over head_dim
  static constexpr int kNTiles = D / 8;      // n8 tiles over head_dim
  static constexpr int kStage = D + 4;       // fp32 per row of the mma -> row layout staging
  // Offsets per batch of loads in the row layout: more in flight for d = 64, fewer
  // registers for d = 128.
  static constexpr int kGroup = D == 64 ? 2 : 1;
  // Blocks per SM the register budget is set for (__launch_bounds__): 4 x 128 threads at
  // d = 64 (<= 128 registers), 2 at d = 128; the key pass holds K and V fragments and
  // runs 3 at d = 64.
  static constexpr int kMinBlocks = D == 64 ? 4 : 2;
  static constexpr int kMinBlocksKey = D == 64 ? 3 : 2;
  // A fragments of the warp's own 16 rows are reloaded from shared memory at each use
  // (extent 1): holding them (extent kKSteps, see hold_fragments) spills under these
  // register budgets.
  static constexpr int kHeld = 1;
};

// ---- PTX wrappers -------------------------------------------------------------------

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy; zero-fills when !valid (src must still be a valid address).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}

__device__ __forceinline__ void cp_async4(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
               "r"(valid ? 4 : 0));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }

template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

// c += a (16x16, row) * b (16x8, col), bf16 in, fp32 accumulate.
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Address of A fragment ks (16 rows from wrow, 16 columns from 16 * ks) for ldmatrix_x4.
template <int D>
__device__ __forceinline__ const __nv_bfloat16* a_address(const __nv_bfloat16* tile, int wrow,
                                                          int ks, int lane) {
  return tile + (wrow + (lane & 7) + ((lane >> 3) & 1) * 8) * Shape<D>::kStride + ks * 16 +
         (lane >> 4) * 8;
}

// A fragments of a warp's 16 rows of a padded smem tile: held in registers when the
// array has one entry per k step (ldmatrix'd once here), else loaded at each use.
template <int D, int H>
__device__ __forceinline__ void hold_fragments(uint32_t (&held)[H][4], const __nv_bfloat16* tile,
                                               int wrow, int lane) {
  if constexpr (H == Shape<D>::kKSteps) {
#pragma unroll
    for (int ks = 0; ks < Shape<D>::kKSteps; ++ks) {
      ldmatrix_x4(held[ks], a_address<D>(tile, wrow, ks, lane));
    }
  }
}

template <int D, int H>
__device__ __forceinline__ void a_fragment(uint32_t (&dst)[4], const uint32_t (&held)[H][4],
                                           const __nv_bfloat16* tile, int wrow, int ks, int lane) {
  if constexpr (H == Shape<D>::kKSteps) {
#pragma unroll
    for (int t = 0; t < 4; ++t) dst[t] = held[ks][t];
  } else {
    ldmatrix_x4(dst, a_address<D>(tile, wrow, ks, lane));
  }
}

// ---- small helpers ------------------------------------------------------------------

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &h, sizeof(u));
  return u;
}

__device__ __forceinline__ float bf16_lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

// Two mma accumulator n8 tiles (16 rows x 16 columns, fp32) as an A fragment, split into
// bf16 hi and lo parts (hi + lo equals x to ~2^-16 relative).
__device__ __forceinline__ void to_a_fragment(const float (&x0)[4], const float (&x1)[4],
                                              uint32_t (&hi)[4], uint32_t (&lo)[4]) {
  const float v[8] = {x0[0], x0[1], x0[2], x0[3], x1[0], x1[1], x1[2], x1[3]};
#pragma unroll
  for (int t = 0; t < 4; ++t) {
    hi[t] = pack_bf16(v[2 * t], v[2 * t + 1]);
    lo[t] = pack_bf16(v[2 * t] - bf16_lo(hi[t]), v[2 * t + 1] - bf16_hi(hi[t]));
  }
}

__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

// Copies rows [row0, row0 + 64) of a [n, D] matrix into a padded smem tile; rows
// outside [0, n) become zeros.
template <int D>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src, int row0, int n) {
  using S = Shape<D>;
#pragma unroll
  for (int it = 0; it < kTile * S::kChunks / kThreads; ++it) {
    const int idx = it * kThreads + static_cast<int>(threadIdx.x);
    const int r = idx / S::kChunks, ch = idx % S::kChunks;
    const int row = row0 + r;
    const bool valid = row >= 0 && row < n;
    cp_async16(dst + r * S::kStride + ch * 8,
               src + static_cast<size_t>(valid ? row : 0) * D + ch * 8, valid);
  }
}

// Row layout: lane c of a quad owns the 16-byte chunks c, c + 4, ... of its row.
// Row layout for the backward's row term: lane c of a quad owns the 16-byte chunks c,
// c + 4, ... of its row.
template <int D>
__device__ __forceinline__ void load_row(const bf16* row, int c, uint4 (&r)[Shape<D>::kRowChunks]) {
#pragma unroll
  for (int t = 0; t < Shape<D>::kRowChunks; ++t) {
    r[t] = __ldg(reinterpret_cast<const uint4*>(row) + c + 4 * t);
  }
}

// This lane's share of a . b over a row (the quad sums the shares).
template <int RC>
__device__ __forceinline__ float dot_part(const uint4 (&a)[RC], const uint4 (&b)[RC]) {
  float s0 = 0.f, s1 = 0.f;
#pragma unroll
  for (int t = 0; t < RC; ++t) {
    const uint32_t wa[4] = {a[t].x, a[t].y, a[t].z, a[t].w};
    const uint32_t wb[4] = {b[t].x, b[t].y, b[t].z, b[t].w};
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      s0 = fmaf(bf16_lo(wa[u]), bf16_lo(wb[u]), s0);
      s1 = fmaf(bf16_hi(wa[u]), bf16_hi(wb[u]), s1);
    }
  }
  return s0 + s1;
}

// An offset slot pairs row r of a warp's 16 rows with row r of the warp's 16-row slice
// of the offset's chunk: a diagonal. In an mma accumulator of that 16 x 16 block the
// diagonal element of row g (and g + 8) sits in lane 4g + g/2 at column parity g & 1.
__device__ __forceinline__ bool diagonal_owner(int g, int c) { return c == (g >> 1); }

__device__ __forceinline__ float diagonal_of(const float (&x)[2][4], int h, int g) {
  return h == 0 ? ((g & 1) ? x[0][1] : x[0][0]) : ((g & 1) ? x[1][3] : x[1][2]);
}

// A fragment of diag(x0, x1): x0 the diagonal value of row g, x1 of row g + 8 (used by
// the owner lane only), split into bf16 hi + lo parts.
__device__ __forceinline__ void diagonal_fragment(float x0, float x1, int g, int c,
                                                  uint32_t (&hi)[4], uint32_t (&lo)[4]) {
  const bool owner = diagonal_owner(g, c);
  x0 = owner ? x0 : 0.f;
  x1 = owner ? x1 : 0.f;
  const float h0 = __bfloat162float(__float2bfloat16_rn(x0));
  const float h1 = __bfloat162float(__float2bfloat16_rn(x1));
  const bool odd = g & 1;
  // Row g's element is column g = 2c + (g & 1) of k-block 0 (a0); row g + 8's is column
  // g + 8 of k-block 1 (a3).
  hi[0] = odd ? pack_bf16(0.f, h0) : pack_bf16(h0, 0.f);
  hi[3] = odd ? pack_bf16(0.f, h1) : pack_bf16(h1, 0.f);
  lo[0] = odd ? pack_bf16(0.f, x0 - h0) : pack_bf16(x0 - h0, 0.f);
  lo[3] = odd ? pack_bf16(0.f, x1 - h1) : pack_bf16(x1 - h1, 0.f);
  hi[1] = hi[2] = lo[1] = lo[2] = 0u;
}

// acc (16 x D) += a (16 x 16) * rows 16 of a padded smem tile from `row0` (B from
// ldmatrix.trans: the tile's rows are the k dimension).
template <int D>
__device__ __forceinline__ void mma_rows(float (&acc)[Shape<D>::kNTiles][4],
                                         const uint32_t (&hi)[4], const uint32_t (&lo)[4],
                                         const bf16* tile, int row0, int lane) {
#pragma unroll
  for (int nd = 0; nd < D / 16; ++nd) {
    uint32_t b[4];
    ldmatrix_x4_trans(b, tile + (row0 + (lane & 7) + ((lane >> 3) & 1) * 8) * Shape<D>::kStride +
                             nd * 16 + (lane >> 4) * 8);
    mma(acc[2 * nd], hi, b[0], b[1]);
    mma(acc[2 * nd + 1], hi, b[2], b[3]);
    if (kSplit) {
      mma(acc[2 * nd], lo, b[0], b[1]);
      mma(acc[2 * nd + 1], lo, b[2], b[3]);
    }
  }
}

// acc (16 x 16: two n8 tiles) += a (the warp's 16 rows, held or from smem) * rows
// row0 .. row0 + 15 of a padded smem tile, transposed (B from ldmatrix, no .trans).
template <int D, int H>
__device__ __forceinline__ void mma_scores(float (&acc)[2][4], const uint32_t (&held)[H][4],
                                           const bf16* a_tile, int wrow, const bf16* tile, int row0,
                                           int lane) {
#pragma unroll
  for (int ks = 0; ks < Shape<D>::kKSteps; ++ks) {
    uint32_t a[4], b[4];
    a_fragment<D, H>(a, held, a_tile, wrow, ks, lane);
    ldmatrix_x4(b, tile + (row0 + (lane & 7) + (lane >> 4) * 8) * Shape<D>::kStride + ks * 16 +
                       ((lane >> 3) & 1) * 8);
    mma(acc[0], a, b[0], b[1]);
    mma(acc[1], a, b[2], b[3]);
  }
}

// Writes a warp's 16 x D accumulator times `factor` as bf16 rows row0.. (< n) of dst,
// through the warp's 16 rows of a padded smem tile, with 16-byte stores.
template <int D>
__device__ __forceinline__ void store_rows(const float (&acc)[Shape<D>::kNTiles][4],
                                           const float (&factor)[2], bf16* stage, bf16* dst,
                                           int row0, int n, int lane) {
  using S = Shape<D>;
  const int g = lane / 4, c = lane % 4;
#pragma unroll
  for (int nt = 0; nt < S::kNTiles; ++nt) {
    *reinterpret_cast<uint32_t*>(stage + g * S::kStride + 8 * nt + 2 * c) =
        pack_bf16(acc[nt][0] * factor[0], acc[nt][1] * factor[0]);
    *reinterpret_cast<uint32_t*>(stage + (g + 8) * S::kStride + 8 * nt + 2 * c) =
        pack_bf16(acc[nt][2] * factor[1], acc[nt][3] * factor[1]);
  }
  __syncwarp();
#pragma unroll
  for (int it = 0; it < 16 * S::kChunks / 32; ++it) {
    const int idx = it * 32 + lane;
    const int r = idx / S::kChunks, ch = idx % S::kChunks;
    if (row0 + r < n) {
      reinterpret_cast<uint4*>(dst + static_cast<size_t>(row0 + r) * D)[ch] =
          *reinterpret_cast<const uint4*>(stage + r * S::kStride + ch * 8);
    }
  }
}

__device__ __forceinline__ void load_offsets(const IntOffsets& offs, int* s_off) {
  for (int t = threadIdx.x; t < offs.count; t += kThreads) s_off[t] = offs.d[t];
  __syncthreads();
}

// Chunks of a query tile [t0, t0 + 64): the window chunks first (keys from
// max(0, t0 - W + 1) to t0 + 63 in 64-row steps), then one chunk per offset d (keys
// t0 - d ..), each a 64-row block of K and V streamed through a 2-stage cp.async pipeline.
struct QueryChunks {
  int window_chunks, first, total;
  __device__ QueryChunks(int t0, int window, int count) {
    const int lowest = max(0, t0 - window + 1);
    window_chunks = (t0 - lowest + kTile - 1) / kTile + 1;
    first = t0 - (window_chunks - 1) * kTile;
    total = window_chunks + count;
  }
  __device__ int row0(int x, int t0, const int* s_off) const {
    return x < window_chunks ? first + x * kTile : t0 - s_off[x - window_chunks];
  }
};

// 16-row blocks of a window chunk from kc that some row of the warp (rows i0 .. i0 + 15)
// can see.
__device__ __forceinline__ bool band_block_needed(int j_lo, int i0, int window) {
  return j_lo <= i0 + 15 && i0 - (j_lo + 15) < window && j_lo + 15 >= 0;
}

// ---- forward ------------------------------------------------------------------------

template <int D>
constexpr size_t forward_smem_bytes() {
  return 5 * Shape<D>::kTileElems * sizeof(bf16);  // Q + 2 stages of K and V
}

// out[i] = softmax over the window keys i - W + 1 .. i and keys i - d_k of scale q.k,
// times v; lse[i] = log-sum-exp of the scaled scores (natural log).
template <int D>
__global__ void __launch_bounds__(kThreads, Shape<D>::kMinBlocks)
    forward_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                   const bf16* __restrict__ v, bf16* __restrict__ out, float* __restrict__ lse,
                   int n, int window, float scale_log2, IntOffsets offs) {
  using S = Shape<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int s_off[kMaxOffsets];
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sK = sQ + S::kTileElems;
  bf16* sV = sK + 2 * S::kTileElems;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int t0 = blockIdx.x * kTile;
  const int wrow = 16 * warp;
  const int rows[2] = {t0 + wrow + g, t0 + wrow + g + 8};
  const size_t head = static_cast<size_t>(blockIdx.y) * n * D;
  const bf16* kh = k + head;
  const bf16* vh = v + head;
  load_offsets(offs, s_off);

  const QueryChunks chunks(t0, window, offs.count);
  load_tile<D>(sQ, q + head, t0, n);
  load_tile<D>(sK, kh, chunks.first, n);
  load_tile<D>(sV, vh, chunks.first, n);
  cp_async_commit();

  uint32_t qa[S::kHeld][4];
  float o[S::kNTiles][4];
#pragma unroll
  for (int nt = 0; nt < S::kNTiles; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // log2 units; l per lane

  // Online-softmax step for rows g, g + 8 given their new maxima: rescales o and l.
  auto rescale = [&](const float(&mx)[2], float(&mu)[2]) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float m_new = fmaxf(m[r], mx[r]);
      mu[r] = m_new == -INFINITY ? 0.f : m_new;  // nothing visible yet: keep exp2 finite
      const float alpha = exp2f(m[r] - mu[r]);
      m[r] = m_new;
      l[r] *= alpha;
#pragma unroll
      for (int nt = 0; nt < S::kNTiles; ++nt) {
        o[nt][2 * r] *= alpha;
        o[nt][2 * r + 1] *= alpha;
      }
    }
  };

  for (int x = 0; x < chunks.total; ++x) {
    const int stage = x & 1;
    if (x + 1 < chunks.total) {
      const int next = chunks.row0(x + 1, t0, s_off);
      load_tile<D>(sK + (stage ^ 1) * S::kTileElems, kh, next, n);
      load_tile<D>(sV + (stage ^ 1) * S::kTileElems, vh, next, n);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (x == 0) hold_fragments<D>(qa, sQ, wrow, lane);
    const bf16* cK = sK + stage * S::kTileElems;
    const bf16* cV = sV + stage * S::kTileElems;

    if (x < chunks.window_chunks) {  // window band: up to 64 x 64 scores per chunk
      const int kc = chunks.row0(x, t0, s_off);
      bool need[4];
#pragma unroll
      for (int kb = 0; kb < 4; ++kb) need[kb] = band_block_needed(kc + 16 * kb, t0 + wrow, window);
      float s[4][2][4] = {};
#pragma unroll
      for (int kb = 0; kb < 4; ++kb) {
        if (need[kb]) mma_scores<D>(s[kb], qa, sQ, wrow, cK, 16 * kb, lane);
      }
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int kb = 0; kb < 4; ++kb) {
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int j = kc + 16 * kb + 8 * nt + 2 * c + (e & 1);
            const int i = rows[e >> 1];
            const bool ok = need[kb] && j <= i && i - j < window && j >= 0;
            s[kb][nt][e] = ok ? s[kb][nt][e] * scale_log2 : -INFINITY;
            mx[e >> 1] = fmaxf(mx[e >> 1], s[kb][nt][e]);
          }
        }
      }
      mx[0] = quad_max(mx[0]);
      mx[1] = quad_max(mx[1]);
      float mu[2];
      rescale(mx, mu);
#pragma unroll
      for (int kb = 0; kb < 4; ++kb) {
        if (!need[kb]) continue;
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            s[kb][nt][e] = exp2f(s[kb][nt][e] - mu[e >> 1]);
            l[e >> 1] += s[kb][nt][e];
          }
        }
        uint32_t a_hi[4], a_lo[4];
        to_a_fragment(s[kb][0], s[kb][1], a_hi, a_lo);
        mma_rows<D>(o, a_hi, a_lo, cV, 16 * kb, lane);
      }
    } else {  // offset d: one score per row, on the diagonal of the warp's 16 x 16 block
      const int d = s_off[x - chunks.window_chunks];
      float s[2][4] = {};
      mma_scores<D>(s, qa, sQ, wrow, cK, wrow, lane);
      const int src = (lane & ~3) | (g >> 1);  // the quad's owner lane
      float sc[2], mu[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        sc[h] = __shfl_sync(0xffffffffu, diagonal_of(s, h, g), src);
        sc[h] = rows[h] - d >= 0 ? sc[h] * scale_log2 : -INFINITY;
      }
      // Rescale only when some row's maximum grows (rare after the window band).
      if (__any_sync(0xffffffffu, sc[0] > m[0] || sc[1] > m[1])) {
        rescale(sc, mu);
      } else {
        mu[0] = m[0] == -INFINITY ? 0.f : m[0];
        mu[1] = m[1] == -INFINITY ? 0.f : m[1];
      }
      const float p0 = exp2f(sc[0] - mu[0]), p1 = exp2f(sc[1] - mu[1]);
      if (diagonal_owner(g, c)) {
        l[0] += p0;
        l[1] += p1;
      }
      uint32_t a_hi[4], a_lo[4];
      diagonal_fragment(p0, p1, g, c, a_hi, a_lo);
      mma_rows<D>(o, a_hi, a_lo, cV, wrow, lane);
    }
    __syncthreads();  // the next prefetch overwrites this stage
  }

  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] = quad_sum(l[r]);
    inv[r] = 1.f / l[r];
    if (c == 0 && rows[r] < n) {
      lse[static_cast<size_t>(blockIdx.y) * n + rows[r]] = (m[r] + log2f(l[r])) * kLn2;
    }
  }
  store_rows<D>(o, inv, sQ + wrow * S::kStride, out + head, t0 + wrow, n, lane);
}

// ---- backward, query pass -----------------------------------------------------------

template <int D>
constexpr size_t backward_query_smem_bytes() {
  return 6 * Shape<D>::kTileElems * sizeof(bf16);  // Q, dO + 2 stages of K and V
}

// dq; delta[i] = dO_i . O_i; for offset slot kk: prob[kk, i] = P and dscore[kk, i] = dS
// (the key pass reads them). Workspace rows are [BH, K, n].
template <int D>
__global__ void __launch_bounds__(kThreads, Shape<D>::kMinBlocks)
    backward_query_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                          const bf16* __restrict__ v, const bf16* __restrict__ out,
                          const float* __restrict__ lse, const bf16* __restrict__ grad_out,
                          bf16* __restrict__ grad_q, float* __restrict__ delta,
                          float* __restrict__ prob, float* __restrict__ dscore, int n, int window,
                          float scale, float scale_log2, IntOffsets offs) {
  using S = Shape<D>;
  constexpr int RC = S::kRowChunks;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int s_off[kMaxOffsets];
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sdO = sQ + S::kTileElems;
  bf16* sK = sdO + S::kTileElems;
  bf16* sV = sK + 2 * S::kTileElems;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int t0 = blockIdx.x * kTile;
  const int wrow = 16 * warp;
  const int rows[2] = {t0 + wrow + g, t0 + wrow + g + 8};
  const size_t head = static_cast<size_t>(blockIdx.y) * n * D;
  const bf16* kh = k + head;
  const bf16* vh = v + head;
  const size_t row_base = static_cast<size_t>(blockIdx.y) * n;  // into [BH, n] arrays
  const int count = offs.count;
  load_offsets(offs, s_off);

  const QueryChunks chunks(t0, window, count);
  load_tile<D>(sQ, q + head, t0, n);
  load_tile<D>(sdO, grad_out + head, t0, n);
  load_tile<D>(sK, kh, chunks.first, n);
  load_tile<D>(sV, vh, chunks.first, n);
  cp_async_commit();

  // Row terms (row layout, straight from global memory while the tiles load).
  float lse2[2], dlt[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int i = rows[r] < n ? rows[r] : n - 1;
    uint4 dorow[RC], orow[RC];
    load_row<D>(grad_out + head + static_cast<size_t>(i) * D, c, dorow);
    load_row<D>(out + head + static_cast<size_t>(i) * D, c, orow);
    dlt[r] = quad_sum(dot_part<RC>(dorow, orow));
    lse2[r] = lse[row_base + i] * kLog2e;
    if (c == r && rows[r] < n) delta[row_base + rows[r]] = dlt[r];
  }

  uint32_t qa[S::kHeld][4], da[S::kHeld][4];
  float dq[S::kNTiles][4];
#pragma unroll
  for (int nt = 0; nt < S::kNTiles; ++nt) dq[nt][0] = dq[nt][1] = dq[nt][2] = dq[nt][3] = 0.f;

  for (int x = 0; x < chunks.total; ++x) {
    const int stage = x & 1;
    if (x + 1 < chunks.total) {
      const int next = chunks.row0(x + 1, t0, s_off);
      load_tile<D>(sK + (stage ^ 1) * S::kTileElems, kh, next, n);
      load_tile<D>(sV + (stage ^ 1) * S::kTileElems, vh, next, n);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (x == 0) {
      hold_fragments<D>(qa, sQ, wrow, lane);
      hold_fragments<D>(da, sdO, wrow, lane);
    }
    const bf16* cK = sK + stage * S::kTileElems;
    const bf16* cV = sV + stage * S::kTileElems;

    if (x < chunks.window_chunks) {
      const int kc = chunks.row0(x, t0, s_off);
#pragma unroll
      for (int kb = 0; kb < 4; ++kb) {
        if (!band_block_needed(kc + 16 * kb, t0 + wrow, window)) continue;
        float st[2][4] = {}, dp[2][4] = {};
        mma_scores<D>(st, qa, sQ, wrow, cK, 16 * kb, lane);
        mma_scores<D>(dp, da, sdO, wrow, cV, 16 * kb, lane);
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int j = kc + 16 * kb + 8 * nt + 2 * c + (e & 1);
            const int i = rows[e >> 1];
            const bool ok = j <= i && i - j < window && j >= 0 && i < n;
            const float p = ok ? exp2f(fmaf(st[nt][e], scale_log2, -lse2[e >> 1])) : 0.f;
            st[nt][e] = p * (dp[nt][e] - dlt[e >> 1]);  // dS
          }
        }
        uint32_t a_hi[4], a_lo[4];
        to_a_fragment(st[0], st[1], a_hi, a_lo);
        mma_rows<D>(dq, a_hi, a_lo, cK, 16 * kb, lane);
      }
    } else {  // offset slot kk: the diagonal of the warp's 16 x 16 block
      const int kk = x - chunks.window_chunks;
      const int d = s_off[kk];
      float st[2][4] = {}, dp[2][4] = {};
      mma_scores<D>(st, qa, sQ, wrow, cK, wrow, lane);
      mma_scores<D>(dp, da, sdO, wrow, cV, wrow, lane);
      float ds[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const bool ok = rows[h] - d >= 0 && rows[h] < n;
        const float p = ok ? exp2f(fmaf(diagonal_of(st, h, g), scale_log2, -lse2[h])) : 0.f;
        ds[h] = p * (diagonal_of(dp, h, g) - dlt[h]);
        if (diagonal_owner(g, c) && rows[h] < n) {
          const size_t at = row_base * count + static_cast<size_t>(kk) * n + rows[h];
          prob[at] = p;
          dscore[at] = ds[h];
        }
      }
      uint32_t a_hi[4], a_lo[4];
      diagonal_fragment(ds[0], ds[1], g, c, a_hi, a_lo);
      mma_rows<D>(dq, a_hi, a_lo, cK, wrow, lane);
    }
    __syncthreads();
  }

  const float factor[2] = {scale, scale};
  store_rows<D>(dq, factor, sQ + wrow * S::kStride, grad_q + head, t0 + wrow, n, lane);
}

// ---- backward, key pass -------------------------------------------------------------

template <int D>
constexpr size_t backward_key_smem_bytes() {
  // K, V + 2 stages of Q and dO, + 2 stages of 2 x 64 row values (lse and delta, or P
  // and dS of an offset slot).
  return 6 * Shape<D>::kTileElems * sizeof(bf16) + 2 * 2 * kTile * sizeof(float);
}

// dk, dv for a tile of 64 keys [j0, j0 + 64): the band (queries j .. j + W - 1) on the
// tensor cores, recomputing P and dS from lse and delta; then one chunk per offset d
// (queries j + d) with P and dS read from the query pass.
template <int D>
__global__ void __launch_bounds__(kThreads, Shape<D>::kMinBlocksKey)
    backward_key_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                        const bf16* __restrict__ v, const float* __restrict__ lse,
                        const bf16* __restrict__ grad_out, const float* __restrict__ delta,
                        const float* __restrict__ prob, const float* __restrict__ dscore,
                        bf16* __restrict__ grad_k, bf16* __restrict__ grad_v, int n, int window,
                        float scale, float scale_log2, IntOffsets offs) {
  using S = Shape<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int s_off[kMaxOffsets];
  bf16* sK = reinterpret_cast<bf16*>(smem);
  bf16* sV = sK + S::kTileElems;
  bf16* sQ = sV + S::kTileElems;
  bf16* sdO = sQ + 2 * S::kTileElems;
  float* sA = reinterpret_cast<float*>(sdO + 2 * S::kTileElems);  // [2][64] lse or P
  float* sB = sA + 2 * kTile;                                     // [2][64] delta or dS
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int j0 = blockIdx.x * kTile;
  const int wrow = 16 * warp;
  const int jb = j0 + wrow;  // this warp's first key
  const int rows[2] = {jb + g, jb + g + 8};
  const size_t head = static_cast<size_t>(blockIdx.y) * n * D;
  const bf16* qh = q + head;
  const bf16* doh = grad_out + head;
  const size_t row_base = static_cast<size_t>(blockIdx.y) * n;
  const int count = offs.count;
  load_offsets(offs, s_off);

  // Query chunks j0, j0 + 64, ... cover queries j0 .. min(n - 1, j0 + 63 + W - 1); then
  // chunk j0 + d for each offset d.
  const int highest = min(n - 1, j0 + kTile - 1 + window - 1);
  const int window_chunks = (highest - j0) / kTile + 1;
  const int total = window_chunks + count;
  auto load_chunk = [&](int stage, int x) {
    const bool band = x < window_chunks;
    const int qc = band ? j0 + x * kTile : j0 + s_off[x - window_chunks];
    load_tile<D>(sQ + stage * S::kTileElems, qh, qc, n);
    load_tile<D>(sdO + stage * S::kTileElems, doh, qc, n);
    const int t = threadIdx.x;  // 128 threads: 64 + 64 row values
    const int i = qc + (t & 63);
    const bool valid = i < n;
    const size_t at = valid ? static_cast<size_t>(i) : 0;
    const float* src;
    if (band) {
      src = (t < 64 ? lse : delta) + row_base + at;
    } else {
      const size_t slot = row_base * count + static_cast<size_t>(x - window_chunks) * n;
      src = (t < 64 ? prob : dscore) + slot + at;
    }
    cp_async4((t < 64 ? sA : sB) + stage * kTile + (t & 63), src, valid);
  };
  load_tile<D>(sK, k + head, j0, n);
  load_tile<D>(sV, v + head, j0, n);
  load_chunk(0, 0);
  cp_async_commit();

  uint32_t ka[S::kHeld][4], va[S::kHeld][4];
  float dk[S::kNTiles][4], dv[S::kNTiles][4];
#pragma unroll
  for (int nt = 0; nt < S::kNTiles; ++nt) {
    dk[nt][0] = dk[nt][1] = dk[nt][2] = dk[nt][3] = 0.f;
    dv[nt][0] = dv[nt][1] = dv[nt][2] = dv[nt][3] = 0.f;
  }

  for (int x = 0; x < total; ++x) {
    const int stage = x & 1;
    if (x + 1 < total) {
      load_chunk(stage ^ 1, x + 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (x == 0) {
      hold_fragments<D>(ka, sK, wrow, lane);
      hold_fragments<D>(va, sV, wrow, lane);
    }
    const bf16* cQ = sQ + stage * S::kTileElems;
    const bf16* cdO = sdO + stage * S::kTileElems;
    const float* cA = sA + stage * kTile;
    const float* cB = sB + stage * kTile;

    if (x < window_chunks) {
      const int qc = j0 + x * kTile;
#pragma unroll
      for (int qb = 0; qb < 4; ++qb) {
        const int i_lo = qc + 16 * qb;
        if (!(i_lo + 15 >= jb && i_lo - (jb + 15) < window && i_lo < n)) continue;
        float st[2][4] = {}, dpt[2][4] = {};  // S^T and dP^T: rows = keys, columns = queries
        mma_scores<D>(st, ka, sK, wrow, cQ, 16 * qb, lane);
        mma_scores<D>(dpt, va, sV, wrow, cdO, 16 * qb, lane);
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int col = 16 * qb + 8 * nt + 2 * c + (e & 1);
            const int i = qc + col;
            const int j = rows[e >> 1];
            const bool ok = i >= j && i - j < window && i < n;
            const float p = ok ? exp2f(fmaf(st[nt][e], scale_log2, -cA[col] * kLog2e)) : 0.f;
            st[nt][e] = p;
            dpt[nt][e] = p * (dpt[nt][e] - cB[col]);  // dS^T
          }
        }
        uint32_t p_hi[4], p_lo[4], s_hi[4], s_lo[4];
        to_a_fragment(st[0], st[1], p_hi, p_lo);
        to_a_fragment(dpt[0], dpt[1], s_hi, s_lo);
        mma_rows<D>(dv, p_hi, p_lo, cdO, 16 * qb, lane);
        mma_rows<D>(dk, s_hi, s_lo, cQ, 16 * qb, lane);
      }
    } else {  // offset slot: key wrow + r pairs with query row wrow + r of the chunk
      uint32_t hi[4], lo[4];
      diagonal_fragment(cA[wrow + g], cA[wrow + g + 8], g, c, hi, lo);
      mma_rows<D>(dv, hi, lo, cdO, wrow, lane);
      diagonal_fragment(cB[wrow + g], cB[wrow + g + 8], g, c, hi, lo);
      mma_rows<D>(dk, hi, lo, cQ, wrow, lane);
    }
    __syncthreads();
  }

  const float factor_k[2] = {scale, scale}, factor_v[2] = {1.f, 1.f};
  store_rows<D>(dk, factor_k, sQ + wrow * S::kStride, grad_k + head, jb, n, lane);
  store_rows<D>(dv, factor_v, sdO + wrow * S::kStride, grad_v + head, jb, n, lane);
}

}  // namespace reach::kernels::gpu::tc
