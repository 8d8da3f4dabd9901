// Tensor-core path of the CUDA dilated attention (included by dilated_attention.cu only):
// bf16 inputs, head_dim 64 or 128; the forward takes integer and fractional (learned)
// offsets; the backward takes them too at d = 64, with the offset gradient, and integer
// offsets without it at d = 128.
//
// A block owns a tile of 64 consecutive queries (forward, dq pass) or keys (dk/dv pass);
// each of its 4 warps owns 16 rows. Two phases share one online softmax:
//  * the window band: the tile against the 64-row chunks covering its band, as small
//    dense blocks on the tensor cores (mma.sync m16n8k16 bf16, fp32 accumulation),
//    FlashAttention-2 style, skipping 16-column blocks a warp's rows cannot see;
//  * the dilated offsets: for offset d the tile reads one contiguous block of rows
//    (rows i - d), a diagonal, so a quad of 4 lanes owns one row and reads it with
//    16-byte loads straight from global memory (L2), dot products reduced in the quad.
// The mma accumulators are moved to this "row layout" through shared memory between
// the phases (the quad owning a row in the row layout is the quad holding it in the
// mma layout, so the running max and sum carry over unchanged).
//
// Backward without atomics: a query pass (dq) that recomputes P from the forward's
// log-sum-exp, computes delta_i = dO_i . O_i and stores P and dS for the offset slots
// only (8 bytes per query and offset), then a key pass (dk, dv) that recomputes the
// band blocks transposed and reads P and dS for its offset slots.
//
// Probabilities and score gradients enter the mma rounded to bf16 (one mma, FlashAttention's
// choice; kSplit = true makes them bf16 hi + lo pairs, two mmas, for fp32-like products). The
// extra rounding is one bf16 rounding per probability, inside the harness's bf16 rule.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace reach::kernels::gpu::tc {

using bf16 = __nv_bfloat16;

constexpr int kTile = 64;       // rows per block
constexpr int kThreads = 128;   // 4 warps x 16 rows
constexpr bool kSplit = false;  // P and dS as one bf16 (false) or bf16 hi + lo (see above)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Offsets as floor d and fraction (frac = x - d; all zero for integer offsets). A
// fractional offset x (the learned schedule) sees the key and value interpolated between
// rows i - d and i - d - 1 (weights 1 - frac, frac), from query ceil(x) on.
struct IntOffsets {
  int count;
  int d[kMaxOffsets];
  float frac[kMaxOffsets];
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
  // Keep the warp's A fragments (its 16 rows of Q, dO, K or V) in registers across the
  // band loop for d = 64; d = 128 reloads them from shared memory (registers).
  static constexpr bool kHold = D == 64;
  static constexpr int kHeld = kHold ? kKSteps : 1;
};

// A fragment ks of a warp's 16 rows of a padded smem tile: held (ldmatrix'd once at
// `held`) or loaded now.
template <int D>
__device__ __forceinline__ void a_fragment(uint32_t (&dst)[4],
                                           const uint32_t (&held)[Shape<D>::kHeld][4],
                                           const __nv_bfloat16* tile, int wrow, int ks, int lane);

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

template <int D>
__device__ __forceinline__ void hold_fragments(uint32_t (&held)[Shape<D>::kHeld][4],
                                               const __nv_bfloat16* tile, int wrow, int lane) {
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
                                           const __nv_bfloat16* tile, int wrow, int ks, int lane) {
  if constexpr (Shape<D>::kHold) {
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

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

// Where head bh's rows of out / grad_out live: heads-first [BH, n, D] (out_heads = 0, the
// layout of q), or token-major [B, n, H, D] (out_heads = H), the output projection's layout,
// which saves a permute of the output forward and of its gradient backward.
struct RowSpan {
  size_t base;  // first row of the head
  int stride;   // elements between consecutive rows
};

template <int D>
__device__ __forceinline__ RowSpan out_rows(int bh, int n, int out_heads) {
  if (out_heads == 0) return {static_cast<size_t>(bh) * n * D, D};
  return {static_cast<size_t>(bh / out_heads) * n * out_heads * D +
              static_cast<size_t>(bh % out_heads) * D,
          out_heads * D};
}

// Copies rows [row0, row0 + 64) of a [n, D] matrix (rows `stride` elements apart) into a
// padded smem tile; rows outside [0, n) become zeros.
template <int D>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src, int row0, int n,
                                          int stride = D) {
  using S = Shape<D>;
#pragma unroll
  for (int it = 0; it < kTile * S::kChunks / kThreads; ++it) {
    const int idx = it * kThreads + static_cast<int>(threadIdx.x);
    const int r = idx / S::kChunks, ch = idx % S::kChunks;
    const int row = row0 + r;
    const bool valid = row >= 0 && row < n;
    cp_async16(dst + r * S::kStride + ch * 8,
               src + static_cast<size_t>(valid ? row : 0) * stride + ch * 8, valid);
  }
}

// Row layout: lane c of a quad owns the 16-byte chunks c, c + 4, ... of its row.

template <int D>
__device__ __forceinline__ void load_row(const bf16* row, int c, uint4 (&r)[Shape<D>::kRowChunks]) {
#pragma unroll
  for (int t = 0; t < Shape<D>::kRowChunks; ++t) {
    r[t] = __ldg(reinterpret_cast<const uint4*>(row) + c + 4 * t);
  }
}

template <int D>
__device__ __forceinline__ void load_smem_row(const bf16* row, int c,
                                              uint4 (&r)[Shape<D>::kRowChunks]) {
#pragma unroll
  for (int t = 0; t < Shape<D>::kRowChunks; ++t) {
    r[t] = *reinterpret_cast<const uint4*>(row + 8 * (c + 4 * t));
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

// acc += w * x over this lane's share of a row.
template <int RC>
__device__ __forceinline__ void axpy(float w, const uint4 (&x)[RC], float (&acc)[RC * 8]) {
#pragma unroll
  for (int t = 0; t < RC; ++t) {
    const uint32_t wx[4] = {x[t].x, x[t].y, x[t].z, x[t].w};
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      acc[8 * t + 2 * u] = fmaf(w, bf16_lo(wx[u]), acc[8 * t + 2 * u]);
      acc[8 * t + 2 * u + 1] = fmaf(w, bf16_hi(wx[u]), acc[8 * t + 2 * u + 1]);
    }
  }
}

template <int RC>
__device__ __forceinline__ void store_row(bf16* row, int c, const float (&acc)[RC * 8],
                                          float factor) {
#pragma unroll
  for (int t = 0; t < RC; ++t) {
    uint4 x;
    x.x = pack_bf16(acc[8 * t] * factor, acc[8 * t + 1] * factor);
    x.y = pack_bf16(acc[8 * t + 2] * factor, acc[8 * t + 3] * factor);
    x.z = pack_bf16(acc[8 * t + 4] * factor, acc[8 * t + 5] * factor);
    x.w = pack_bf16(acc[8 * t + 6] * factor, acc[8 * t + 7] * factor);
    reinterpret_cast<uint4*>(row)[c + 4 * t] = x;
  }
}

// Moves a warp's 16 x D mma accumulator (rows g, g + 8 of lane 4g + c) into the row
// layout (rows g and g + 8, this lane's chunks) through `stage` (16 x kStage floats).
template <int D>
__device__ __forceinline__ void mma_to_rows(const float (&acc)[Shape<D>::kNTiles][4], float* stage,
                                            int g, int c,
                                            float (&rows)[2][Shape<D>::kRowChunks * 8]) {
  using S = Shape<D>;
#pragma unroll
  for (int nt = 0; nt < S::kNTiles; ++nt) {
    *reinterpret_cast<float2*>(stage + g * S::kStage + 8 * nt + 2 * c) =
        make_float2(acc[nt][0], acc[nt][1]);
    *reinterpret_cast<float2*>(stage + (g + 8) * S::kStage + 8 * nt + 2 * c) =
        make_float2(acc[nt][2], acc[nt][3]);
  }
  __syncwarp();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
#pragma unroll
    for (int t = 0; t < S::kRowChunks; ++t) {
      const float* src = stage + (g + 8 * r) * S::kStage + 8 * (c + 4 * t);
      const float4 a = *reinterpret_cast<const float4*>(src);
      const float4 b = *reinterpret_cast<const float4*>(src + 4);
      float* dst = rows[r] + 8 * t;
      dst[0] = a.x, dst[1] = a.y, dst[2] = a.z, dst[3] = a.w;
      dst[4] = b.x, dst[5] = b.y, dst[6] = b.z, dst[7] = b.w;
    }
  }
}

__device__ __forceinline__ void load_offsets(const IntOffsets& offs, int* s_off) {
  for (int t = threadIdx.x; t < offs.count; t += kThreads) s_off[t] = offs.d[t];
}

// acc (16 x D) += X B for a warp: X a 16 x 16 fp32 block given as bf16 hi + lo A fragments
// (kSplit: both parts, so X keeps fp32-like precision), B the 16 rows from `block` of an smem
// tile (ldmatrix .trans). P V in the forward, dS K, P^T dO and dS^T Q in the backward.
template <int D>
__device__ __forceinline__ void accumulate_block(float (&acc)[Shape<D>::kNTiles][4],
                                                 const uint32_t (&hi)[4], const uint32_t (&lo)[4],
                                                 const bf16* tile, int block, int lane) {
#pragma unroll
  for (int nd = 0; nd < D / 16; ++nd) {
    uint32_t b[4];
    ldmatrix_x4_trans(b, tile + (block + (lane & 7) + ((lane >> 3) & 1) * 8) * Shape<D>::kStride +
                             nd * 16 + (lane >> 4) * 8);
    mma(acc[2 * nd], hi, b[0], b[1]);
    mma(acc[2 * nd + 1], hi, b[2], b[3]);
    if (kSplit) {
      mma(acc[2 * nd], lo, b[0], b[1]);
      mma(acc[2 * nd + 1], lo, b[2], b[3]);
    }
  }
}

// One 64-row key chunk (keys kc .. kc + 63, in cK / cV) of the window band for a warp's
// 16 query rows (qrow0 .. qrow0 + 15, A fragments in qa or sQ at wrow): FlashAttention-2
// step on the tensor cores, skipping 16-key blocks no row of the warp can see.
template <int D>
__device__ __forceinline__ void band_chunk(const uint32_t (&qa)[Shape<D>::kHeld][4], const bf16* sQ,
                                           const bf16* cK, const bf16* cV, int kc, int qrow0,
                                           const int (&rows)[2], int window, float scale_log2,
                                           int wrow, int lane, int c,
                                           float (&o)[Shape<D>::kNTiles][4], float (&m)[2],
                                           float (&l)[2]) {
  using S = Shape<D>;
  bool need[4];  // 16-key blocks that some row of this warp can see
#pragma unroll
  for (int kb = 0; kb < 4; ++kb) {
    const int j_lo = kc + 16 * kb;
    need[kb] = j_lo <= qrow0 + 15 && qrow0 - (j_lo + 15) < window && j_lo + 15 >= 0;
  }
  float s[8][4];
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
  for (int kb = 0; kb < 4; ++kb) {
    if (!need[kb]) continue;
#pragma unroll
    for (int ks = 0; ks < S::kKSteps; ++ks) {
      uint32_t a[4], b[4];
      a_fragment<D>(a, qa, sQ, wrow, ks, lane);
      ldmatrix_x4(b, cK + (16 * kb + (lane & 7) + (lane >> 4) * 8) * S::kStride + ks * 16 +
                         ((lane >> 3) & 1) * 8);
      mma(s[2 * kb], a, b[0], b[1]);
      mma(s[2 * kb + 1], a, b[2], b[3]);
    }
  }
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int j = kc + 8 * nt + 2 * c + (e & 1);
      const int i = rows[e >> 1];
      const bool ok = need[nt / 2] && j <= i && i - j < window && j >= 0;
      s[nt][e] = ok ? s[nt][e] * scale_log2 : -INFINITY;
      mx[e >> 1] = fmaxf(mx[e >> 1], s[nt][e]);
    }
  }
  float mu[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float m_new = fmaxf(m[r], quad_max(mx[r]));
    mu[r] = m_new == -INFINITY ? 0.f : m_new;  // no visible key yet: keep exp2 finite
    const float alpha = exp2f(m[r] - mu[r]);
    m[r] = m_new;
    l[r] *= alpha;
#pragma unroll
    for (int nt = 0; nt < S::kNTiles; ++nt) {
      o[nt][2 * r] *= alpha;
      o[nt][2 * r + 1] *= alpha;
    }
  }
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[nt][e] = exp2f(s[nt][e] - mu[e >> 1]);
      l[e >> 1] += s[nt][e];
    }
  }
#pragma unroll
  for (int kb = 0; kb < 4; ++kb) {
    if (!need[kb]) continue;
    uint32_t a_hi[4], a_lo[4];
    to_a_fragment(s[2 * kb], s[2 * kb + 1], a_hi, a_lo);
    accumulate_block<D>(o, a_hi, a_lo, cV, 16 * kb, lane);
  }
}

// Online-softmax update of one query row with G dilated keys in the row layout (this
// lane's share of the q, k and v rows; the quad reduces the dot products). ok: key visible.
template <int RC, int G>
__device__ __forceinline__ void offsets_update(const uint4 (&qr)[RC], const uint4 (&kr)[G][RC],
                                               const uint4 (&vr)[G][RC], const bool (&ok)[G],
                                               float scale_log2, float& m, float& l,
                                               float (&acc)[RC * 8]) {
  float sc[G];
  float mx = -INFINITY;
#pragma unroll
  for (int u = 0; u < G; ++u) {
    sc[u] = quad_sum(dot_part<RC>(qr, kr[u]));
    sc[u] = ok[u] ? sc[u] * scale_log2 : -INFINITY;
    mx = fmaxf(mx, sc[u]);
  }
  // Rescale only when some row's maximum grows (rare after the window band).
  if (__any_sync(0xffffffffu, mx > m)) {
    const float m_new = fmaxf(m, mx);
    const float alpha = exp2f(m - (m_new == -INFINITY ? 0.f : m_new));
    m = m_new;
    l *= alpha;
#pragma unroll
    for (int t = 0; t < RC * 8; ++t) acc[t] *= alpha;
  }
  const float mu = m == -INFINITY ? 0.f : m;
#pragma unroll
  for (int u = 0; u < G; ++u) {
    const float p = exp2f(sc[u] - mu);
    l += p;
    axpy<RC>(p, vr[u], acc);
  }
}

// Key and value rows i - d (row layout) of the G offsets from k0 for this lane's two query
// rows. ok: the offset exists and its key is visible; an invisible key reads row 0 (finite)
// and is masked by the caller.
template <int D, int G>
__device__ __forceinline__ void load_offset_rows(const bf16* kh, const bf16* vh, const int* s_off,
                                                 int k0, int count, const int (&rows)[2], int n,
                                                 int c, uint4 (&kr)[2][G][Shape<D>::kRowChunks],
                                                 uint4 (&vr)[2][G][Shape<D>::kRowChunks],
                                                 bool (&ok)[2][G]) {
#pragma unroll
  for (int u = 0; u < G; ++u) {
    const bool exists = k0 + u < count;
    const int d = exists ? s_off[k0 + u] : 0;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = rows[r] - d;
      ok[r][u] = exists && row >= 0 && rows[r] < n;
      const size_t at = static_cast<size_t>(ok[r][u] ? row : 0) * D;
      load_row<D>(kh + at, c, kr[r][u]);
      load_row<D>(vh + at, c, vr[r][u]);
    }
  }
}

// Two 16 x 16 score blocks over head_dim for a warp's 16 rows: x += A1 B1^T and
// y += A2 B2^T, A1 / A2 the warp's rows (held fragments or smem tiles at wrow), B1 / B2 the
// 16 rows from `block` of two smem tiles (ldmatrix, not transposed). The backward passes
// score S and dP (or their transposes) together this way.
template <int D>
__device__ __forceinline__ void two_score_blocks(float (&x)[2][4], float (&y)[2][4],
                                                 const uint32_t (&a1_held)[Shape<D>::kHeld][4],
                                                 const bf16* a1,
                                                 const uint32_t (&a2_held)[Shape<D>::kHeld][4],
                                                 const bf16* a2, int wrow, const bf16* b1,
                                                 const bf16* b2, int block, int lane) {
  using S = Shape<D>;
#pragma unroll
  for (int ks = 0; ks < S::kKSteps; ++ks) {
    const int at =
        (block + (lane & 7) + (lane >> 4) * 8) * S::kStride + ks * 16 + ((lane >> 3) & 1) * 8;
    uint32_t a[4], b[4];
    a_fragment<D>(a, a1_held, a1, wrow, ks, lane);
    ldmatrix_x4(b, b1 + at);
    mma(x[0], a, b[0], b[1]);
    mma(x[1], a, b[2], b[3]);
    a_fragment<D>(a, a2_held, a2, wrow, ks, lane);
    ldmatrix_x4(b, b2 + at);
    mma(y[0], a, b[0], b[1]);
    mma(y[1], a, b[2], b[3]);
  }
}

// First key of the 64-row chunks t0 - 64 * m, ..., t0 that cover a query tile's window
// band, keys max(0, t0 - W + 1) .. t0 + 63 (t0: the tile's first query, a multiple of 64).
__device__ __forceinline__ int first_band_chunk(int t0, int window) {
  const int lowest = max(0, t0 - window + 1);
  return t0 - (t0 - lowest + kTile - 1) / kTile * kTile;
}

// A step of the two-stage pipeline over key chunks: prefetches chunk kc + 64 into the other
// stage when `more`, then waits for chunk kc (in `stage`) and makes it visible to the block.
template <int D>
__device__ __forceinline__ void key_chunk_ready(bf16* sK, bf16* sV, const bf16* kh, const bf16* vh,
                                                int kc, int stage, bool more, int n) {
  if (more) {
    load_tile<D>(sK + (stage ^ 1) * Shape<D>::kTileElems, kh, kc + kTile, n);
    load_tile<D>(sV + (stage ^ 1) * Shape<D>::kTileElems, vh, kc + kTile, n);
    cp_async_commit();
    cp_async_wait<1>();
  } else {
    cp_async_wait<0>();
  }
  __syncthreads();
}

template <int N>
__device__ __forceinline__ void zero_tiles(float (&x)[N][4]) {
#pragma unroll
  for (int t = 0; t < N; ++t) x[t][0] = x[t][1] = x[t][2] = x[t][3] = 0.f;
}

// ---- forward ------------------------------------------------------------------------

template <int D>
constexpr size_t forward_smem_bytes() {
  return 5 * Shape<D>::kTileElems * sizeof(bf16);  // Q + 2 stages of K and V
}

// out[i] = softmax over the window keys i - W + 1 .. i and keys i - d_k of scale q.k,
// times v; lse[i] = log-sum-exp of the scaled scores (natural log).
// Frac: some offset is fractional; each offset then reads two key/value rows and scores
// (1 - f) q.k[i - d] + f q.k[i - d - 1] (the score of the interpolated key, exactly), its
// value entering as two weighted rows, so nothing interpolated is rounded to bf16.
template <int D, int G, bool Frac>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                   const bf16* __restrict__ v, bf16* __restrict__ out, float* __restrict__ lse,
                   int n, int window, float scale_log2, IntOffsets offs, int kv_group,
                   int out_heads) {
  using S = Shape<D>;
  constexpr int RC = S::kRowChunks;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int s_off[kMaxOffsets];
  __shared__ float s_frac[kMaxOffsets];
  if constexpr (Frac) {
    for (int t = threadIdx.x; t < offs.count; t += kThreads) s_frac[t] = offs.frac[t];
  }
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sK = sQ + S::kTileElems;
  bf16* sV = sK + 2 * S::kTileElems;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int t0 = blockIdx.x * kTile;
  const int wrow = 16 * warp;
  const int rows[2] = {t0 + wrow + g, t0 + wrow + g + 8};
  const size_t head = static_cast<size_t>(blockIdx.y) * n * D;
  const size_t kv_head = static_cast<size_t>(blockIdx.y / kv_group) * n * D;  // GQA
  const bf16* qh = q + head;
  const bf16* kh = k + kv_head;
  const bf16* vh = v + kv_head;
  load_offsets(offs, s_off);

  const int first = first_band_chunk(t0, window);
  const int chunks = (t0 - first) / kTile + 1;
  load_tile<D>(sQ, qh, t0, n);
  load_tile<D>(sK, kh, first, n);
  load_tile<D>(sV, vh, first, n);
  cp_async_commit();

  uint32_t qa[S::kHeld][4];
  float o[S::kNTiles][4];
  zero_tiles(o);
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // log2 units

  for (int ci = 0; ci < chunks; ++ci) {
    const int kc = first + ci * kTile;
    const int stage = ci & 1;
    key_chunk_ready<D>(sK, sV, kh, vh, kc, stage, ci + 1 < chunks, n);
    if (ci == 0) hold_fragments<D>(qa, sQ, wrow, lane);
    band_chunk<D>(qa, sQ, sK + stage * S::kTileElems, sV + stage * S::kTileElems, kc, t0 + wrow,
                  rows, window, scale_log2, wrow, lane, c, o, m, l);
    __syncthreads();  // the next prefetch overwrites this stage
  }

  // Window phase -> row layout; the K stages are free now.
  float acc[2][RC * 8];
  mma_to_rows<D>(o, reinterpret_cast<float*>(sK) + warp * 16 * S::kStage, g, c, acc);
#pragma unroll
  for (int r = 0; r < 2; ++r) l[r] = quad_sum(l[r]);

  if constexpr (Frac) {
    // Fractional offsets, one at a time: rows i - d and (when f > 0) i - d - 1.
    for (int kk = 0; kk < offs.count; ++kk) {
      const int d = s_off[kk];
      const float f = s_frac[kk];  // the same for the whole grid: no divergence
      const bool two = f > 0.f;
      uint4 kr[2][2][RC], vr[2][2][RC];  // [row r][i - d, i - d - 1]
      bool ok[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = rows[r] - d;
        ok[r] = row - (two ? 1 : 0) >= 0 && rows[r] < n;  // visible from query ceil(x)
        const size_t at = static_cast<size_t>(ok[r] ? row : 0) * D;
        load_row<D>(kh + at, c, kr[r][0]);
        load_row<D>(vh + at, c, vr[r][0]);
        if (two) {
          const size_t at1 = static_cast<size_t>(ok[r] ? row - 1 : 0) * D;
          load_row<D>(kh + at1, c, kr[r][1]);
          load_row<D>(vh + at1, c, vr[r][1]);
        }
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        uint4 qr[RC];
        load_smem_row<D>(sQ + (wrow + g + 8 * r) * S::kStride, c, qr);
        float sc = quad_sum(dot_part<RC>(qr, kr[r][0]));
        if (two) sc = fmaf(f, quad_sum(dot_part<RC>(qr, kr[r][1])) - sc, sc);
        sc = ok[r] ? sc * scale_log2 : -INFINITY;
        if (__any_sync(0xffffffffu, sc > m[r])) {
          const float m_new = fmaxf(m[r], sc);
          const float alpha = exp2f(m[r] - (m_new == -INFINITY ? 0.f : m_new));
          m[r] = m_new;
          l[r] *= alpha;
#pragma unroll
          for (int t = 0; t < RC * 8; ++t) acc[r][t] *= alpha;
        }
        const float p = exp2f(sc - (m[r] == -INFINITY ? 0.f : m[r]));
        l[r] += p;
        if (two) {
          axpy<RC>(p * (1.f - f), vr[r][0], acc[r]);
          axpy<RC>(p * f, vr[r][1], acc[r]);
        } else {
          axpy<RC>(p, vr[r][0], acc[r]);
        }
      }
    }
  }
  // Integer offsets, G at a time: all their key and value rows are loaded before any is used.
  for (int k0 = 0; k0 < (Frac ? 0 : offs.count); k0 += G) {
    uint4 kr[2][G][RC], vr[2][G][RC];
    bool ok[2][G];
    load_offset_rows<D, G>(kh, vh, s_off, k0, offs.count, rows, n, c, kr, vr, ok);
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      uint4 qr[RC];  // read from shared memory at each use (registers)
      load_smem_row<D>(sQ + (wrow + g + 8 * r) * S::kStride, c, qr);
      offsets_update<RC, G>(qr, kr[r], vr[r], ok[r], scale_log2, m[r], l[r], acc[r]);
    }
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int i = rows[r];
    if (i >= n) continue;
    const RowSpan o = out_rows<D>(blockIdx.y, n, out_heads);
    store_row<RC>(out + o.base + static_cast<size_t>(i) * o.stride, c, acc[r], 1.f / l[r]);
    if (c == 0) lse[static_cast<size_t>(blockIdx.y) * n + i] = (m[r] + log2f(l[r])) * kLn2;
  }
}

// ---- backward, query pass -----------------------------------------------------------

template <int D>
constexpr size_t backward_query_smem_bytes() {
  return 6 * Shape<D>::kTileElems * sizeof(bf16);  // Q, dO + 2 stages of K and V
}

// dq; delta[i] = dO_i . O_i; for offset slot kk: prob[kk, i] = P and dscore[kk, i] = dS
// (the key pass reads them). Workspace rows are [BH, K, n].
//
// Frac (d = 64): fractional offsets and/or the offset gradient. Each offset reads rows
// i - d (k0, v0) and i - d - 1 (k1, v1): score (1 - f) q.k0 + f q.k1, dP likewise, dq gets
// both rows, and d loss / d x = dS scale q.(k1 - k0) + P dO.(v1 - v0) (the right
// derivative at integer x, as the reference), summed per block into
// offset_partials[block, K] when that is not null.
template <int D, int G, bool Frac>
__global__ void __launch_bounds__(kThreads)
    backward_query_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                          const bf16* __restrict__ v, const bf16* __restrict__ out,
                          const float* __restrict__ lse, const bf16* __restrict__ grad_out,
                          bf16* __restrict__ grad_q, float* __restrict__ delta,
                          float* __restrict__ prob, float* __restrict__ dscore,
                          float* __restrict__ offset_partials, int n, int window, float scale,
                          float scale_log2, IntOffsets offs, int kv_group, int out_heads) {
  using S = Shape<D>;
  constexpr int RC = S::kRowChunks;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int s_off[kMaxOffsets];
  __shared__ float s_frac[kMaxOffsets];
  __shared__ float block_goff[kThreads / 32][kMaxOffsets];
  if constexpr (Frac) {
    for (int t = threadIdx.x; t < offs.count; t += kThreads) s_frac[t] = offs.frac[t];
    for (int t = threadIdx.x; t < (kThreads / 32) * kMaxOffsets; t += kThreads) {
      block_goff[t / kMaxOffsets][t % kMaxOffsets] = 0.f;
    }
  }
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sdO = sQ + S::kTileElems;
  bf16* sK = sdO + S::kTileElems;
  bf16* sV = sK + 2 * S::kTileElems;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int t0 = blockIdx.x * kTile;
  const int wrow = 16 * warp;
  const int rows[2] = {t0 + wrow + g, t0 + wrow + g + 8};
  const size_t head = static_cast<size_t>(blockIdx.y) * n * D;
  const size_t kv_head = static_cast<size_t>(blockIdx.y / kv_group) * n * D;  // GQA
  const bf16* qh = q + head;
  const bf16* kh = k + kv_head;
  const bf16* vh = v + kv_head;
  const size_t row_base = static_cast<size_t>(blockIdx.y) * n;  // into [BH, n] arrays
  load_offsets(offs, s_off);

  const int first = first_band_chunk(t0, window);
  const int chunks = (t0 - first) / kTile + 1;
  const RowSpan o = out_rows<D>(blockIdx.y, n, out_heads);  // out and grad_out
  load_tile<D>(sQ, qh, t0, n);
  load_tile<D>(sdO, grad_out + o.base, t0, n, o.stride);
  load_tile<D>(sK, kh, first, n);
  load_tile<D>(sV, vh, first, n);
  cp_async_commit();

  // Row terms, in the row layout straight from global memory.
  float lse2[2], dlt[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int i = rows[r] < n ? rows[r] : n - 1;
    uint4 dorow[RC], orow[RC];
    load_row<D>(grad_out + o.base + static_cast<size_t>(i) * o.stride, c, dorow);
    load_row<D>(out + o.base + static_cast<size_t>(i) * o.stride, c, orow);
    dlt[r] = quad_sum(dot_part<RC>(dorow, orow));
    lse2[r] = lse[row_base + i] * kLog2e;
    if (c == r && rows[r] < n) delta[row_base + rows[r]] = dlt[r];
  }

  uint32_t qa[S::kHeld][4], da[S::kHeld][4];
  float dq[S::kNTiles][4];
  zero_tiles(dq);

  for (int ci = 0; ci < chunks; ++ci) {
    const int kc = first + ci * kTile;
    const int stage = ci & 1;
    key_chunk_ready<D>(sK, sV, kh, vh, kc, stage, ci + 1 < chunks, n);
    if (ci == 0) {
      hold_fragments<D>(qa, sQ, wrow, lane);
      hold_fragments<D>(da, sdO, wrow, lane);
    }
    const bf16* cK = sK + stage * S::kTileElems;
    const bf16* cV = sV + stage * S::kTileElems;
#pragma unroll
    for (int kb = 0; kb < 4; ++kb) {
      const int j_lo = kc + 16 * kb;
      if (!(j_lo <= t0 + wrow + 15 && t0 + wrow - (j_lo + 15) < window && j_lo + 15 >= 0)) {
        continue;
      }
      float st[2][4] = {}, dp[2][4] = {};
      two_score_blocks<D>(st, dp, qa, sQ, da, sdO, wrow, cK, cV, 16 * kb, lane);
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int j = j_lo + 8 * nt + 2 * c + (e & 1);
          const int i = rows[e >> 1];
          const bool ok = j <= i && i - j < window && j >= 0 && i < n;
          const float p = ok ? exp2f(fmaf(st[nt][e], scale_log2, -lse2[e >> 1])) : 0.f;
          st[nt][e] = p * (dp[nt][e] - dlt[e >> 1]);  // dS
        }
      }
      uint32_t a_hi[4], a_lo[4];
      to_a_fragment(st[0], st[1], a_hi, a_lo);
      accumulate_block<D>(dq, a_hi, a_lo, cK, 16 * kb, lane);
    }
    __syncthreads();
  }

  float acc[2][RC * 8];
  mma_to_rows<D>(dq, reinterpret_cast<float*>(sK) + warp * 16 * S::kStage, g, c, acc);
  // The tile's own q and dO rows are read from shared memory at each use (registers).

  const int count = offs.count;
  if constexpr (Frac) {
    for (int kk = 0; kk < count; ++kk) {
      const int d = s_off[kk];
      const float f = s_frac[kk];
      float gsum = 0.f;  // this lane's share of d loss / d x (lane c = 0 of each quad)
#pragma unroll
      for (int r = 0; r < 2; ++r) {  // one row at a time: four key/value rows in registers
        const int row = rows[r] - d;
        const bool vis = row - (f > 0.f ? 1 : 0) >= 0 && rows[r] < n;  // from query ceil(x)
        const bool hi_ok = row - 1 >= 0 && rows[r] < n;
        const size_t at0 = static_cast<size_t>(row >= 0 && rows[r] < n ? row : 0) * D;
        const size_t at1 = static_cast<size_t>(hi_ok ? row - 1 : 0) * D;
        uint4 k0r[RC], k1r[RC], v0r[RC], v1r[RC];
        load_row<D>(kh + at0, c, k0r);
        load_row<D>(vh + at0, c, v0r);
        load_row<D>(kh + at1, c, k1r);
        load_row<D>(vh + at1, c, v1r);
        uint4 mine[RC];
        load_smem_row<D>(sQ + (wrow + g + 8 * r) * S::kStride, c, mine);
        const float q_lo = quad_sum(dot_part<RC>(mine, k0r));
        const float q_hi = quad_sum(dot_part<RC>(mine, k1r));
        load_smem_row<D>(sdO + (wrow + g + 8 * r) * S::kStride, c, mine);
        const float d_lo = quad_sum(dot_part<RC>(mine, v0r));
        const float d_hi = quad_sum(dot_part<RC>(mine, v1r));
        const float sc = fmaf(f, q_hi - q_lo, q_lo);  // (1 - f) q.k0 + f q.k1
        const float p = vis ? exp2f(fmaf(sc, scale_log2, -lse2[r])) : 0.f;
        const float ds = p * (fmaf(f, d_hi - d_lo, d_lo) - dlt[r]);
        axpy<RC>(ds * (1.f - f), k0r, acc[r]);
        if (f > 0.f) axpy<RC>(ds * f, k1r, acc[r]);
        if (c == r && rows[r] < n) {
          const size_t at = (row_base * count) + static_cast<size_t>(kk) * n + rows[r];
          prob[at] = p;
          dscore[at] = ds;
        }
        if (c == 0 && vis && hi_ok) gsum += ds * scale * (q_hi - q_lo) + p * (d_hi - d_lo);
      }
      if (offset_partials != nullptr) {
        const float gw = warp_sum(gsum);
        if (lane == 0) block_goff[warp][kk] += gw;
      }
    }
    if (offset_partials != nullptr) {
      __syncthreads();
      if (static_cast<int>(threadIdx.x) < count) {
        float sum = 0.f;
#pragma unroll
        for (int w = 0; w < kThreads / 32; ++w) sum += block_goff[w][threadIdx.x];
        const size_t block = static_cast<size_t>(blockIdx.y) * gridDim.x + blockIdx.x;
        offset_partials[block * count + threadIdx.x] = sum;
      }
    }
  }
  for (int k0 = 0; k0 < (Frac ? 0 : count); k0 += G) {
    uint4 kr[2][G][RC], vr[2][G][RC];
    bool ok[2][G];
    load_offset_rows<D, G>(kh, vh, s_off, k0, count, rows, n, c, kr, vr, ok);
#pragma unroll
    for (int u = 0; u < G; ++u) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        uint4 mine[RC];
        load_smem_row<D>(sQ + (wrow + g + 8 * r) * S::kStride, c, mine);
        const float s = quad_sum(dot_part<RC>(mine, kr[r][u]));
        load_smem_row<D>(sdO + (wrow + g + 8 * r) * S::kStride, c, mine);
        const float dpv = quad_sum(dot_part<RC>(mine, vr[r][u]));
        const float p = ok[r][u] ? exp2f(fmaf(s, scale_log2, -lse2[r])) : 0.f;
        const float ds = p * (dpv - dlt[r]);
        axpy<RC>(ds, kr[r][u], acc[r]);
        if (c == r && k0 + u < count && rows[r] < n) {
          const size_t at = (row_base * count) + static_cast<size_t>(k0 + u) * n + rows[r];
          prob[at] = p;
          dscore[at] = ds;
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (rows[r] < n)
      store_row<RC>(grad_q + head + static_cast<size_t>(rows[r]) * D, c, acc[r], scale);
  }
}

// ---- backward, key pass -------------------------------------------------------------

template <int D>
constexpr size_t backward_key_smem_bytes() {
  // K, V + 2 stages of Q and dO, + 2 stages of 64 lse and 64 delta values.
  return 6 * Shape<D>::kTileElems * sizeof(bf16) + 2 * 2 * kTile * sizeof(float);
}

// dk, dv for a tile of 64 keys: the band (queries j .. j + W - 1) on the tensor cores,
// then the offset slots (queries j + d_k) from the stored P and dS.
// Frac: key j is row i - d of query i = j + d (weight 1 - f) and row i - d - 1 of query
// j + d + 1 (weight f).
template <int D, int G, bool Frac>
__global__ void __launch_bounds__(kThreads)
    backward_key_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                        const bf16* __restrict__ v, const float* __restrict__ lse,
                        const bf16* __restrict__ grad_out, const float* __restrict__ delta,
                        const float* __restrict__ prob, const float* __restrict__ dscore,
                        bf16* __restrict__ grad_k, bf16* __restrict__ grad_v, int n, int window,
                        float scale, float scale_log2, IntOffsets offs, int kv_group, int out_heads,
                        bool heads_fastest) {
  using S = Shape<D>;
  constexpr int RC = S::kRowChunks;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int s_off[kMaxOffsets];
  __shared__ float s_frac[kMaxOffsets];
  if constexpr (Frac) {
    for (int t = threadIdx.x; t < offs.count; t += kThreads) s_frac[t] = offs.frac[t];
  }
  bf16* sK = reinterpret_cast<bf16*>(smem);
  bf16* sV = sK + S::kTileElems;
  bf16* sQ = sV + S::kTileElems;
  bf16* sdO = sQ + 2 * S::kTileElems;
  float* sL = reinterpret_cast<float*>(sdO + 2 * S::kTileElems);  // [2][64] lse
  float* sDl = sL + 2 * kTile;                                    // [2][64] delta
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  // heads_fastest (for a token-major grad_out): the grid is (heads, tiles), so the blocks in flight
  // are all heads of few key tiles and together read whole [H * D] rows of grad_out (one head's
  // rows are out_heads * D apart); otherwise (tiles, heads).
  const int bh = heads_fastest ? blockIdx.x : blockIdx.y;
  const int j0 = (heads_fastest ? blockIdx.y : blockIdx.x) * kTile;
  const int wrow = 16 * warp;
  const int jb = j0 + wrow;  // this warp's first key
  const int rows[2] = {jb + g, jb + g + 8};
  const size_t head = static_cast<size_t>(bh) * n * D;
  const bf16* qh = q + head;
  const RowSpan o = out_rows<D>(bh, n, out_heads);  // grad_out's rows
  const bf16* doh = grad_out + o.base;
  const size_t row_base = static_cast<size_t>(bh) * n;
  load_offsets(offs, s_off);

  // Query chunks j0, j0 + 64, ... cover queries j0 .. min(n - 1, j0 + 63 + W - 1).
  const int highest = min(n - 1, j0 + kTile - 1 + window - 1);
  const int chunks = (highest - j0) / kTile + 1;
  auto load_chunk = [&](int stage, int qc) {
    load_tile<D>(sQ + stage * S::kTileElems, qh, qc, n);
    load_tile<D>(sdO + stage * S::kTileElems, doh, qc, n, o.stride);
    const int t = threadIdx.x;  // 128 threads: 64 lse + 64 delta values
    const int i = qc + (t & 63);
    const bool valid = i < n;
    const float* src = (t < 64 ? lse : delta) + row_base + (valid ? i : 0);
    cp_async4((t < 64 ? sL : sDl) + stage * kTile + (t & 63), src, valid);
  };
  // K/V of this query head's group (GQA); dK/dV are written per query head (the caller sums
  // each group).
  const size_t kv_head = static_cast<size_t>(bh / kv_group) * n * D;
  load_tile<D>(sK, k + kv_head, j0, n);
  load_tile<D>(sV, v + kv_head, j0, n);
  load_chunk(0, j0);
  cp_async_commit();

  uint32_t ka[S::kHeld][4], va[S::kHeld][4];
  float dk[S::kNTiles][4], dv[S::kNTiles][4];
  zero_tiles(dk);
  zero_tiles(dv);

  for (int ci = 0; ci < chunks; ++ci) {
    const int qc = j0 + ci * kTile;
    const int stage = ci & 1;
    if (ci + 1 < chunks) {
      load_chunk(stage ^ 1, qc + kTile);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (ci == 0) {
      hold_fragments<D>(ka, sK, wrow, lane);
      hold_fragments<D>(va, sV, wrow, lane);
    }
    const bf16* cQ = sQ + stage * S::kTileElems;
    const bf16* cdO = sdO + stage * S::kTileElems;
    const float* cL = sL + stage * kTile;
    const float* cDl = sDl + stage * kTile;
#pragma unroll
    for (int qb = 0; qb < 4; ++qb) {
      const int i_lo = qc + 16 * qb;
      if (!(i_lo + 15 >= jb && i_lo - (jb + 15) < window && i_lo < n)) continue;
      float st[2][4] = {}, dpt[2][4] = {};  // S^T and dP^T: rows = keys, columns = queries
      two_score_blocks<D>(st, dpt, ka, sK, va, sV, wrow, cQ, cdO, 16 * qb, lane);
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = 16 * qb + 8 * nt + 2 * c + (e & 1);
          const int i = qc + col;
          const int j = rows[e >> 1];
          const bool ok = i >= j && i - j < window && i < n;
          const float p = ok ? exp2f(fmaf(st[nt][e], scale_log2, -cL[col] * kLog2e)) : 0.f;
          st[nt][e] = p;
          dpt[nt][e] = p * (dpt[nt][e] - cDl[col]);  // dS^T
        }
      }
      uint32_t p_hi[4], p_lo[4], s_hi[4], s_lo[4];
      to_a_fragment(st[0], st[1], p_hi, p_lo);
      to_a_fragment(dpt[0], dpt[1], s_hi, s_lo);
      accumulate_block<D>(dv, p_hi, p_lo, cdO, 16 * qb, lane);
      accumulate_block<D>(dk, s_hi, s_lo, cQ, 16 * qb, lane);
    }
    __syncthreads();
  }

  // Band -> row layout (Q/dO stages are free now), then the offset slots.
  float dkr[2][RC * 8], dvr[2][RC * 8];
  float* stage_k = reinterpret_cast<float*>(sQ) + warp * 16 * S::kStage;
  mma_to_rows<D>(dk, stage_k, g, c, dkr);
  mma_to_rows<D>(dv, stage_k + kThreads / 32 * 16 * S::kStage, g, c, dvr);

  const int count = offs.count;
  if constexpr (Frac) {
    for (int kk = 0; kk < count; ++kk) {
      const int d = s_off[kk];
      const float f = s_frac[kk];
#pragma unroll
      for (int h = 0; h < 2; ++h) {  // h = 0: query j + d (weight 1 - f); 1: j + d + 1 (f)
        if (h == 1 && !(f > 0.f)) break;
        const float w = h == 0 ? 1.f - f : f;
        uint4 qr[2][RC], dor[2][RC];
        float p[2], ds[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int i = rows[r] + d + h;
          const bool ok = i < n && rows[r] < n;
          const size_t at = static_cast<size_t>(ok ? i : 0);
          load_row<D>(qh + at * D, c, qr[r]);
          load_row<D>(doh + at * o.stride, c, dor[r]);
          const size_t wi = row_base * count + static_cast<size_t>(kk) * n + at;
          p[r] = ok ? w * __ldg(prob + wi) : 0.f;
          ds[r] = ok ? w * __ldg(dscore + wi) : 0.f;
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          axpy<RC>(ds[r], qr[r], dkr[r]);
          axpy<RC>(p[r], dor[r], dvr[r]);
        }
      }
    }
  }
  for (int k0 = 0; k0 < (Frac ? 0 : count); k0 += G) {
    uint4 qr[G][2][RC], dor[G][2][RC];
    float p[G][2], ds[G][2];
#pragma unroll
    for (int u = 0; u < G; ++u) {
      const bool exists = k0 + u < count;
      const int d = exists ? s_off[k0 + u] : 0;
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int i = rows[r] + d;
        const bool ok = exists && i < n && rows[r] < n;
        const size_t at = static_cast<size_t>(ok ? i : 0);
        load_row<D>(qh + at * D, c, qr[u][r]);
        load_row<D>(doh + at * o.stride, c, dor[u][r]);
        const size_t w = row_base * count + static_cast<size_t>(ok ? k0 + u : 0) * n + at;
        p[u][r] = ok ? __ldg(prob + w) : 0.f;
        ds[u][r] = ok ? __ldg(dscore + w) : 0.f;
      }
    }
#pragma unroll
    for (int u = 0; u < G; ++u) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        axpy<RC>(ds[u][r], qr[u][r], dkr[r]);
        axpy<RC>(p[u][r], dor[u][r], dvr[r]);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (rows[r] >= n) continue;
    store_row<RC>(grad_k + head + static_cast<size_t>(rows[r]) * D, c, dkr[r], scale);
    store_row<RC>(grad_v + head + static_cast<size_t>(rows[r]) * D, c, dvr[r], 1.f);
  }
}

}  // namespace reach::kernels::gpu::tc
