// Probe: what the dilated offsets cost in the forward, apart from the window band, and
// whether that cost is memory (L2 -> SM) or instruction bound. Kernels with the tensor-core
// forward's access pattern (64-query tiles, 4 warps, the key/value rows i - d of each
// offset read with 16-byte loads) that
//   (a) "only": load the rows and fold them (XOR), a quad of lanes per row as in the
//       forward, G offsets in flight per warp;
//   (b) "math": also do the fp32 dot products, online softmax and value sums (q unpacked
//       once), i.e. the forward's offset phase without the window band;
//   (c) "octet": loads only, 8 lanes per row, so one warp load covers 4 whole 128-byte
//       rows instead of 8 half rows ("cg": bypassing L1);
//   (d) "bulk" / (e) "cp.async": loads only, into per-warp shared-memory slots (S of them,
//       4 KB each: a warp's 16 rows of k and v at one offset) by the bulk copy engine
//       (1-D TMA, completion on an mbarrier) or by 16-byte cp.async, S - 1 in flight;
//       no registers hold bytes in flight, so these test whether the register budget
//       is what limits the gathers.
// bf16, d 64, n 65,536 x 16 (batch x) heads, Fibonacci offsets 89, 144, ... (the first K).
// Built by CMake where nvcc exists (bench/CMakeLists.txt); run it on the GPU machine:
//   cmake --build build --target offset_gather_probe && build/bench/offset_gather_probe
// Results and their reading: docs/benchmarks.md ("Where the forward's offset time goes").
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "pattern/dilated_offsets.hpp"

namespace {

constexpr int D = 64;
constexpr int kMaxK = 32;
struct Offsets {
  int count;
  int d[kMaxK];
};

__device__ __forceinline__ float lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

// The forward's gathers: rows i - d of k and v for G offsets from k0, a quad of lanes per
// row (lane c: 16-byte chunks c and c + 4), all issued before any is used.
template <int G>
__device__ __forceinline__ void load_rows(const uint4* __restrict__ k, const uint4* __restrict__ v,
                                          size_t head, const int (&rows)[2], const Offsets& offs,
                                          int k0, int c, uint4 (&kr)[G][2][2],
                                          uint4 (&vr)[G][2][2]) {
#pragma unroll
  for (int u = 0; u < G; ++u) {
    const int d = k0 + u < offs.count ? offs.d[k0 + u] : 0;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = max(rows[r] - d, 0);
#pragma unroll
      for (int t = 0; t < 2; ++t) {
        kr[u][r][t] = __ldg(k + head + static_cast<size_t>(row) * 8 + c + 4 * t);
        vr[u][r][t] = __ldg(v + head + static_cast<size_t>(row) * 8 + c + 4 * t);
      }
    }
  }
}

// (a) loads only: every lane XOR-folds its 16-byte chunks of k and v rows.
template <int G>
__global__ void __launch_bounds__(128)
    gather_only(const uint4* __restrict__ k, const uint4* __restrict__ v, uint4* __restrict__ out,
                int n, Offsets offs) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, c = lane % 4;
  const size_t head = static_cast<size_t>(blockIdx.y) * n * (D / 8);
  const int rows[2] = {static_cast<int>(blockIdx.x) * 64 + 16 * warp + g,
                       static_cast<int>(blockIdx.x) * 64 + 16 * warp + g + 8};
  uint4 f[2] = {};
  for (int k0 = 0; k0 < offs.count; k0 += G) {
    uint4 kr[G][2][2], vr[G][2][2];
    load_rows<G>(k, v, head, rows, offs, k0, c, kr, vr);
#pragma unroll
    for (int u = 0; u < G; ++u)
#pragma unroll
      for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int t = 0; t < 2; ++t) {
          f[r].x ^= kr[u][r][t].x ^ vr[u][r][t].x;
          f[r].y ^= kr[u][r][t].y ^ vr[u][r][t].y;
          f[r].z ^= kr[u][r][t].z ^ vr[u][r][t].z;
          f[r].w ^= kr[u][r][t].w ^ vr[u][r][t].w;
        }
  }
  for (int r = 0; r < 2; ++r) {
    out[head + static_cast<size_t>(rows[r]) * 8 + c] = f[r];
    out[head + static_cast<size_t>(rows[r]) * 8 + c + 4] = f[r];
  }
}

// (b) the offsets' math on the CUDA cores: q unpacked to fp32 once, online softmax.
template <int G>
__global__ void __launch_bounds__(128)
    gather_math(const uint4* __restrict__ q, const uint4* __restrict__ k,
                const uint4* __restrict__ v, uint4* __restrict__ out, int n, Offsets offs) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, c = lane % 4;
  const size_t head = static_cast<size_t>(blockIdx.y) * n * (D / 8);
  const int rows[2] = {static_cast<int>(blockIdx.x) * 64 + 16 * warp + g,
                       static_cast<int>(blockIdx.x) * 64 + 16 * warp + g + 8};
  float qf[2][16], acc[2][16] = {}, m[2] = {-1e30f, -1e30f}, l[2] = {0.f, 0.f};
  for (int r = 0; r < 2; ++r)
    for (int t = 0; t < 2; ++t) {
      const uint4 x = q[head + static_cast<size_t>(rows[r]) * 8 + c + 4 * t];
      const uint32_t w[4] = {x.x, x.y, x.z, x.w};
      for (int u = 0; u < 4; ++u) {
        qf[r][8 * t + 2 * u] = lo(w[u]) * 0.18f;
        qf[r][8 * t + 2 * u + 1] = hi(w[u]) * 0.18f;
      }
    }
  for (int k0 = 0; k0 < offs.count; k0 += G) {
    uint4 kr[G][2][2], vr[G][2][2];
    load_rows<G>(k, v, head, rows, offs, k0, c, kr, vr);
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float s[G];
      float mx = m[r];
#pragma unroll
      for (int u = 0; u < G; ++u) {
        float a = 0.f, b = 0.f;
#pragma unroll
        for (int t = 0; t < 2; ++t) {
          const uint32_t w[4] = {kr[u][r][t].x, kr[u][r][t].y, kr[u][r][t].z, kr[u][r][t].w};
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            a = fmaf(qf[r][8 * t + 2 * e], lo(w[e]), a);
            b = fmaf(qf[r][8 * t + 2 * e + 1], hi(w[e]), b);
          }
        }
        s[u] = a + b;
        s[u] += __shfl_xor_sync(0xffffffffu, s[u], 1);
        s[u] += __shfl_xor_sync(0xffffffffu, s[u], 2);
        mx = fmaxf(mx, s[u]);
      }
      if (__any_sync(0xffffffffu, mx > m[r])) {
        const float al = exp2f(m[r] - mx);
        l[r] *= al;
        for (int e = 0; e < 16; ++e) acc[r][e] *= al;
        m[r] = mx;
      }
#pragma unroll
      for (int u = 0; u < G; ++u) {
        const float p = exp2f(s[u] - m[r]);
        l[r] += p;
#pragma unroll
        for (int t = 0; t < 2; ++t) {
          const uint32_t w[4] = {vr[u][r][t].x, vr[u][r][t].y, vr[u][r][t].z, vr[u][r][t].w};
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            acc[r][8 * t + 2 * e] = fmaf(p, lo(w[e]), acc[r][8 * t + 2 * e]);
            acc[r][8 * t + 2 * e + 1] = fmaf(p, hi(w[e]), acc[r][8 * t + 2 * e + 1]);
          }
        }
      }
    }
  }
  for (int r = 0; r < 2; ++r)
    for (int t = 0; t < 2; ++t) {
      uint32_t w[4];
      for (int u = 0; u < 4; ++u) {
        const __nv_bfloat162 h =
            __floats2bfloat162_rn(acc[r][8 * t + 2 * u] / l[r], acc[r][8 * t + 2 * u + 1] / l[r]);
        w[u] = *reinterpret_cast<const uint32_t*>(&h);
      }
      out[head + static_cast<size_t>(rows[r]) * 8 + c + 4 * t] = make_uint4(w[0], w[1], w[2], w[3]);
    }
}

__device__ __forceinline__ uint4 ld_cg(const uint4* p) {
  uint4 r;
  asm volatile("ld.global.cg.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

// (c) loads only, an octet of lanes per row (each lane one 16-byte chunk): a warp load
// instruction covers 4 whole 128-byte rows instead of 8 half rows.
template <int G, bool CG>
__global__ void __launch_bounds__(128)
    gather_octet(const uint4* __restrict__ k, const uint4* __restrict__ v, uint4* __restrict__ out,
                 int n, Offsets offs) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, oc = lane / 8, c = lane % 8;
  const size_t head = static_cast<size_t>(blockIdx.y) * n * (D / 8);
  const int base = static_cast<int>(blockIdx.x) * 64 + 16 * warp + oc;
  uint4 f[4] = {};
  for (int k0 = 0; k0 < offs.count; k0 += G) {
    uint4 kr[G][4], vr[G][4];
#pragma unroll
    for (int u = 0; u < G; ++u) {
      const int d = k0 + u < offs.count ? offs.d[k0 + u] : 0;
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int row = max(base + 4 * r - d, 0);
        const uint4* kp = k + head + static_cast<size_t>(row) * 8 + c;
        const uint4* vp = v + head + static_cast<size_t>(row) * 8 + c;
        kr[u][r] = CG ? ld_cg(kp) : __ldg(kp);
        vr[u][r] = CG ? ld_cg(vp) : __ldg(vp);
      }
    }
#pragma unroll
    for (int u = 0; u < G; ++u)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        f[r].x ^= kr[u][r].x ^ vr[u][r].x;
        f[r].y ^= kr[u][r].y ^ vr[u][r].y;
        f[r].z ^= kr[u][r].z ^ vr[u][r].z;
        f[r].w ^= kr[u][r].w ^ vr[u][r].w;
      }
  }
  for (int r = 0; r < 4; ++r) out[head + static_cast<size_t>(base + 4 * r) * 8 + c] = f[r];
}

// ---- async copies into shared memory (no registers hold bytes in flight) -------------

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbar_init(uint64_t* bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(smem_u32(bar)) : "memory");
}

__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile(
      "{\n .reg .b64 st;\n mbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}\n" ::"r"(
          smem_u32(bar)),
      "r"(bytes)
      : "memory");
}

__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n .reg .pred p;\n WAIT_%=:\n mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      " @!p bra WAIT_%=;\n}\n" ::"r"(smem_u32(bar)),
      "r"(parity)
      : "memory");
}

// Bulk copy engine (TMA, 1-D): global -> shared, completion counted on `bar`.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes,
                                          uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::
          "r"(smem_u32(dst)),
      "l"(src), "r"(bytes), "r"(smem_u32(bar))
      : "memory");
}

__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(dst)), "l"(src));
}

// Start row of a warp's 16 consecutive rows i - d (clamped into the sequence).
__device__ __forceinline__ int block_start(int base, int d, int n) {
  return min(max(base - d, 0), n - 16);
}

// (d) loads only, by the bulk copy engine: each warp keeps S slots of 4 KB (its 16 rows of
// k and v at one offset, 2 KB contiguous each); lane 0 refills a slot as soon as the warp
// has read it, so S - 1 offsets stay in flight while one is read (lane-contiguous reads).
template <int S>
__global__ void __launch_bounds__(128)
    gather_bulk(const uint4* __restrict__ k, const uint4* __restrict__ v, uint4* __restrict__ out,
                int n, Offsets offs) {
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ __align__(8) uint64_t bars[4][S];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  uint4* slots = reinterpret_cast<uint4*>(smem) + warp * S * 256;
  const int base = static_cast<int>(blockIdx.x) * 64 + 16 * warp;
  const size_t head = static_cast<size_t>(blockIdx.y) * n * (D / 8);
  if (lane == 0) {
    for (int s = 0; s < S; ++s) mbar_init(&bars[warp][s]);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncwarp();
  auto issue = [&](int kk, int s) {
    const int start = block_start(base, offs.d[kk], n);
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    mbar_expect_tx(&bars[warp][s], 4096);
    bulk_copy(slots + s * 256, k + head + static_cast<size_t>(start) * 8, 2048, &bars[warp][s]);
    bulk_copy(slots + s * 256 + 128, v + head + static_cast<size_t>(start) * 8, 2048,
              &bars[warp][s]);
  };
  if (lane == 0) {
    for (int s = 0; s < S && s < offs.count; ++s) issue(s, s);
  }
  uint4 f = {};
  for (int kk = 0; kk < offs.count; ++kk) {
    const int s = kk % S;
    mbar_wait(&bars[warp][s], (kk / S) & 1);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const uint4 x = slots[s * 256 + lane + 32 * j];
      f.x ^= x.x, f.y ^= x.y, f.z ^= x.z, f.w ^= x.w;
    }
    __syncwarp();
    if (lane == 0 && kk + S < offs.count) issue(kk + S, s);
  }
  for (int j = 0; j < 4; ++j) out[head + static_cast<size_t>(base) * 8 + lane + 32 * j] = f;
}

// (e) loads only, cp.async 16-byte copies into the same per-warp slots (each lane copies
// 8 of a slot's 256 chunks), S - 1 slots in flight.
template <int S>
__global__ void __launch_bounds__(128)
    gather_cpasync(const uint4* __restrict__ k, const uint4* __restrict__ v,
                   uint4* __restrict__ out, int n, Offsets offs) {
  extern __shared__ __align__(128) unsigned char smem[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  uint4* slots = reinterpret_cast<uint4*>(smem) + warp * S * 256;
  const int base = static_cast<int>(blockIdx.x) * 64 + 16 * warp;
  const size_t head = static_cast<size_t>(blockIdx.y) * n * (D / 8);
  auto issue = [&](int kk, int s) {
    if (kk < offs.count) {
      const size_t at = head + static_cast<size_t>(block_start(base, offs.d[kk], n)) * 8;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        cp_async16(slots + s * 256 + lane + 32 * j, k + at + lane + 32 * j);
        cp_async16(slots + s * 256 + 128 + lane + 32 * j, v + at + lane + 32 * j);
      }
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  };
  for (int s = 0; s < S - 1; ++s) issue(s, s);
  uint4 f = {};
  for (int kk = 0; kk < offs.count; ++kk) {
    issue(kk + S - 1, (kk + S - 1) % S);
    asm volatile("cp.async.wait_group %0;\n" ::"n"(S - 1) : "memory");
    __syncwarp();
    const int s = kk % S;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const uint4 x = slots[s * 256 + lane + 32 * j];
      f.x ^= x.x, f.y ^= x.y, f.z ^= x.z, f.w ^= x.w;
    }
    __syncwarp();
  }
  for (int j = 0; j < 4; ++j) out[head + static_cast<size_t>(base) * 8 + lane + 32 * j] = f;
}

template <typename F>
float median_ms(F fn) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  for (int t = 0; t < 3; ++t) fn();
  std::vector<float> ms;
  for (int t = 0; t < 20; ++t) {
    cudaEventRecord(a);
    fn();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float x;
    cudaEventElapsedTime(&x, a, b);
    ms.push_back(x);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "offset_gather_probe: %s: %s\n", what, cudaGetErrorString(status));
    std::exit(1);
  }
}

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 0;
  }
  const int n = 65536, bh = 16;
  const size_t elems = static_cast<size_t>(n) * bh * D, bytes = elems * 2;
  uint4 *q, *k, *v, *o;
  check(cudaMalloc(&q, bytes), "cudaMalloc");
  check(cudaMalloc(&k, bytes), "cudaMalloc");
  check(cudaMalloc(&v, bytes), "cudaMalloc");
  check(cudaMalloc(&o, bytes), "cudaMalloc");
  std::vector<uint16_t> h(elems);
  for (size_t i = 0; i < elems; ++i)
    h[i] = static_cast<uint16_t>(0x3f80 + (i * 2654435761u >> 20) % 100);  // bf16 in [1, 1.8)
  for (uint4* dst : {q, k, v}) {
    check(cudaMemcpy(dst, h.data(), bytes, cudaMemcpyHostToDevice), "upload");
  }
  const float copy = median_ms([&] { cudaMemcpyAsync(o, k, bytes, cudaMemcpyDeviceToDevice); });
  const double bw = 2.0 * bytes / (copy * 1e-3);
  std::printf("copy %.3f ms = %.0f GB/s; floor(q,k,v,o) = %.3f ms\n", copy, bw / 1e9,
              4.0 * bytes / bw * 1e3);
  // The Fibonacci offsets from 89 (pattern/): 89, 144, ..., 46368 (14 of them).
  const auto fib =
      reach::pattern::integer_offsets({reach::pattern::OffsetBase::fibonacci, 1.0, 89, 46368});
  const dim3 grid(n / 64, bh);
  std::printf("%3s | %10s %10s %10s %10s %10s %10s %10s\n", "K", "only G=2", "only G=4", "math G=2",
              "math G=4", "octet G=2", "octet G=4", "octet cg");
  for (int K : {0, 1, 4, 8, 14}) {
    Offsets offs{};
    offs.count = K;
    for (int i = 0; i < K; ++i) offs.d[i] = static_cast<int>(fib[static_cast<size_t>(i)]);
    const float a2 = median_ms([&] { gather_only<2><<<grid, 128>>>(k, v, o, n, offs); });
    const float a4 = median_ms([&] { gather_only<4><<<grid, 128>>>(k, v, o, n, offs); });
    const float b2 = median_ms([&] { gather_math<2><<<grid, 128>>>(q, k, v, o, n, offs); });
    const float b4 = median_ms([&] { gather_math<4><<<grid, 128>>>(q, k, v, o, n, offs); });
    const float c2 = median_ms([&] { gather_octet<2, false><<<grid, 128>>>(k, v, o, n, offs); });
    const float c4 = median_ms([&] { gather_octet<4, false><<<grid, 128>>>(k, v, o, n, offs); });
    const float cg = median_ms([&] { gather_octet<4, true><<<grid, 128>>>(k, v, o, n, offs); });
    std::printf("%3d | %10.4f %10.4f %10.4f %10.4f %10.4f %10.4f %10.4f\n", K, a2, a4, b2, b4, c2,
                c4, cg);
  }
  check(cudaDeviceSynchronize(), "kernels");

  // Async copies into shared memory, same pattern, S slots of 4 KB per warp.
  auto slots_bytes = [](int S) { return 4 * S * 4096; };
#define REACH_RAISE(kern, S)                                                                     \
  check(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, slots_bytes(S)), \
        "cudaFuncSetAttribute")
  REACH_RAISE((gather_bulk<2>), 2);
  REACH_RAISE((gather_bulk<4>), 4);
  REACH_RAISE((gather_bulk<8>), 8);
  REACH_RAISE((gather_cpasync<4>), 4);
  std::printf("\nasync copies into shared memory (loads only; per-warp slots of 4 KB)\n");
  std::printf("%3s | %10s %10s %10s %10s\n", "K", "bulk S=2", "bulk S=4", "bulk S=8", "cp.async 4");
  for (int K : {1, 4, 8, 14}) {
    Offsets offs{};
    offs.count = K;
    for (int i = 0; i < K; ++i) offs.d[i] = static_cast<int>(fib[static_cast<size_t>(i)]);
    const float b2 =
        median_ms([&] { gather_bulk<2><<<grid, 128, slots_bytes(2)>>>(k, v, o, n, offs); });
    const float b4 =
        median_ms([&] { gather_bulk<4><<<grid, 128, slots_bytes(4)>>>(k, v, o, n, offs); });
    const float b8 =
        median_ms([&] { gather_bulk<8><<<grid, 128, slots_bytes(8)>>>(k, v, o, n, offs); });
    const float c4 =
        median_ms([&] { gather_cpasync<4><<<grid, 128, slots_bytes(4)>>>(k, v, o, n, offs); });
    std::printf("%3d | %10.4f %10.4f %10.4f %10.4f\n", K, b2, b4, b8, c4);
  }
  check(cudaDeviceSynchronize(), "async kernels");

  return 0;
}
