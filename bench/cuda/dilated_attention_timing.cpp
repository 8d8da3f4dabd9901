// Kernel-level timing of the CUDA dilated attention (build/bench/dilated_attention_timing, run by
// scripts/gpu-check): bf16, batch x n = 131,072 tokens, 8 heads, d 64, W 64, Fibonacci offsets
// (none, reach 4096, reach n), forward and backward without the offset gradient (the tensor-core
// path), straight through the kernels' C++ interface (no torch): how the time splits between the
// window band (K = 0) and the offsets. Times are medians of device-event timings over 20 runs after
// 3 warm-ups.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "kernels/cuda/dilated_attention.hpp"
#include "pattern/dilated_offsets.hpp"

namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(status));
    std::exit(1);
  }
}

uint16_t to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// Roughly normal values (sum of 4 uniforms, unit variance), bf16.
std::vector<uint16_t> random_bf16(size_t count, uint64_t seed) {
  std::vector<uint16_t> out(count);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& x : out) {
    float sum = 0;
    for (int t = 0; t < 4; ++t) {
      s ^= s << 13;
      s ^= s >> 7;
      s ^= s << 17;
      sum += static_cast<float>(s >> 40) / static_cast<float>(1 << 24) - 0.5f;
    }
    x = to_bf16(sum * std::sqrt(3.0f));
  }
  return out;
}

// Fibonacci offsets W <= d <= R (alpha 1), from pattern/.
std::vector<double> fibonacci_offsets(int64_t window, int64_t reach) {
  const auto ints =
      reach::pattern::integer_offsets({reach::pattern::OffsetBase::fibonacci, 1.0, window, reach});
  return std::vector<double>(ints.begin(), ints.end());
}

float median_ms(const std::function<void()>& fn) {
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "event");
  check(cudaEventCreate(&stop), "event");
  for (int t = 0; t < 3; ++t) fn();
  std::vector<float> ms;
  for (int t = 0; t < 20; ++t) {
    check(cudaEventRecord(start), "record");
    fn();
    check(cudaEventRecord(stop), "record");
    check(cudaEventSynchronize(stop), "sync");
    float x = 0;
    check(cudaEventElapsedTime(&x, start, stop), "elapsed");
    ms.push_back(x);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 0;
  }
  using reach::kernels::DilatedAttentionParams;
  namespace gpu = reach::kernels::gpu;
  const int64_t tokens = 131072, heads = 8, d = 64, window = 64;
  const size_t count = static_cast<size_t>(tokens * heads * d);
  const size_t bytes = count * 2;
  void *q, *k, *v, *g, *o, *dq, *dk, *dv, *ws;
  float* lse;
  for (void** p : {&q, &k, &v, &g, &o, &dq, &dk, &dv}) {
    check(cudaMalloc(p, bytes), "cudaMalloc");
  }
  check(cudaMalloc(reinterpret_cast<void**>(&lse), tokens * heads * 4), "cudaMalloc");
  uint64_t seed = 1;
  for (void* p : {q, k, v, g}) {
    const auto h = random_bf16(count, seed++);
    check(cudaMemcpy(p, h.data(), bytes, cudaMemcpyHostToDevice), "upload");
  }
  std::printf("%7s %7s %3s | %9s %9s %9s | %9s\n", "n", "reach", "K", "fwd ms", "bwd ms", "total",
              "fwd floor");
  // The forward's bandwidth floor: q, k, v and o once over the device-to-device copy
  // bandwidth measured here (a 1 GiB copy counts 2 GiB of traffic).
  float floor_ms = 0;
  {
    void *src, *dst;
    const size_t copy_bytes = size_t{1} << 30;
    check(cudaMalloc(&src, copy_bytes), "cudaMalloc");
    check(cudaMalloc(&dst, copy_bytes), "cudaMalloc");
    const float copy_ms = median_ms(
        [&] { check(cudaMemcpy(dst, src, copy_bytes, cudaMemcpyDeviceToDevice), "copy"); });
    floor_ms = copy_ms * static_cast<float>(4.0 * bytes / (2.0 * copy_bytes));
    cudaFree(src);
    cudaFree(dst);
  }
  const int64_t configs[][2] = {{65536, 0},     {65536, 4096},    {65536, 65536},
                                {131072, 4096}, {131072, 131072}, {2048, 2048}};
  for (const auto& cfg : configs) {
    const int64_t n = cfg[0], reach = cfg[1];
    const auto offsets = reach > 0 ? fibonacci_offsets(window, reach) : std::vector<double>{};
    DilatedAttentionParams p;
    p.batch_heads = tokens / n * heads;
    p.seq_len = n;
    p.head_dim = d;
    p.window = window;
    p.offsets = offsets.data();
    p.num_offsets = static_cast<int64_t>(offsets.size());
    p.scale = 1.0 / std::sqrt(static_cast<double>(d));
    const auto type = gpu::ScalarType::kBFloat16;
    check(cudaMalloc(&ws, gpu::dilated_attention_backward_workspace_bytes(p, type, false) + 16),
          "cudaMalloc");
    auto fwd = [&] { gpu::dilated_attention_forward_cuda(p, type, q, k, v, o, lse, nullptr); };
    auto bwd = [&] {
      gpu::dilated_attention_backward_cuda(p, type, q, k, v, o, lse, g, dq, dk, dv, nullptr, ws,
                                           nullptr);
    };
    const float f_ms = median_ms(fwd);
    const float b_ms = median_ms(bwd);
    std::printf("%7lld %7lld %3lld | %9.3f %9.3f %9.3f | %9.3f\n", static_cast<long long>(n),
                static_cast<long long>(reach), static_cast<long long>(p.num_offsets), f_ms, b_ms,
                f_ms + b_ms, floor_ms);
    std::fflush(stdout);
    cudaFree(ws);
  }
  return 0;
}
