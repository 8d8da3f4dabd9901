// Probe: what the dilated offsets cost in the forward, apart from the window band, and
// whether that cost is memory (L2 -> SM) or instruction bound. Kernels with the tensor-core
// forward's access pattern (64-query tiles, 4 warps, the key/value rows i - d of each
// offset read with 16-byte loads) that
//   (a) "only": load the rows and fold them (XOR), a quad of lanes per row as in the
//       forward, G offsets in flight per warp;
//   (b) "math": also do the fp32 dot products, online softmax and value sums (q unpacked
//       once), i.e. the forward's offset phase without the window band;
//   (c) "octet": loads only, 8 lanes per row, so one warp load covers 4 whole 128-byte
//       rows instead of 8 half rows ("cg": bypassing L1).
// bf16, d 64, n 65,536 x 16 (batch x) heads, Fibonacci offsets 89, 144, ... (the first K).
// Built by CMake where nvcc exists (bench/CMakeLists.txt); run it on the GPU machine:
//   nvcc -O3 -arch=sm_90 -std=c++17 bench/cuda/offset_gather_probe.cu -o probe && ./probe
// Results and their reading: docs/benchmarks.md ("Where the forward's offset time goes").
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

constexpr int D = 64;
constexpr int kMaxK = 32;
struct Offsets {
  int count;
  int d[kMaxK];
};

__device__ __forceinline__ float lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

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
  const int fib[] = {89,   144,  233,  377,   610,   987,   1597,
                     2584, 4181, 6765, 10946, 17711, 28657, 46368};
  const dim3 grid(n / 64, bh);
  std::printf("%3s | %10s %10s %10s %10s %10s %10s %10s\n", "K", "only G=2", "only G=4", "math G=2",
              "math G=4", "octet G=2", "octet G=4", "octet cg");
  for (int K : {0, 1, 4, 8, 14}) {
    Offsets offs{};
    offs.count = K;
    for (int i = 0; i < K; ++i) offs.d[i] = fib[i];
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
  return 0;
}
