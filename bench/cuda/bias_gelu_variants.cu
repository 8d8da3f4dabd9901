// The bias + GELU kernels (kernels/cuda/bias_gelu_kernels.cuh) under several tunings, side by side
// in one process: forward and backward time and bandwidth at the paper preset's MLP shape (64 x
// 1024 tokens x 2,048 hidden, bf16), beside a device-to-device copy of the same bytes (what the
// memory system gives), and each tuning's outputs against the erff baseline's (relative L2: the
// fast erf must stay far below bf16 rounding, ~2e-3). No torch.
//   cmake --build build --target bias_gelu_variants && build/bench/bias_gelu_variants [rows cols]
// Results and their reading: docs/benchmarks.md ("Bias + GELU: the tunings side by side").
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/bias_gelu_kernels.cuh"

namespace {

namespace bg = reach::kernels::gpu::bias_gelu_detail;
using bf16 = __nv_bfloat16;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "bias_gelu_variants: %s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

struct Buffers {
  int64_t rows, cols;
  bf16 *h0, *dy, *y, *dh;
  float *bias, *partial;
};

// Median of `reps` timings of f() (CUDA events), after `warm` untimed calls.
template <typename F>
float median_ms(F f, int warm = 3, int reps = 21) {
  for (int i = 0; i < warm; ++i) f();
  std::vector<float> ms(static_cast<size_t>(reps));
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "event");
  check(cudaEventCreate(&b), "event");
  for (auto& m : ms) {
    check(cudaEventRecord(a), "record");
    f();
    check(cudaEventRecord(b), "record");
    check(cudaEventSynchronize(b), "sync");
    check(cudaEventElapsedTime(&m, a, b), "elapsed");
  }
  check(cudaGetLastError(), "launch");
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

std::vector<float> to_host(const bf16* p, size_t n) {
  std::vector<bf16> raw(n);
  check(cudaMemcpy(raw.data(), p, n * sizeof(bf16), cudaMemcpyDeviceToHost), "copy back");
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = __bfloat162float(raw[i]);
  return out;
}

double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

struct Outputs {
  std::vector<float> y, dh;
};

template <typename Tune>
Outputs run(const char* name, const Buffers& b, const Outputs* baseline) {
  const dim3 block(bg::kColThreads, bg::kLanes);
  const int64_t tiles = bg::tiles(b.cols, bg::kFastCols);
  const auto fwd = bg::forward_kernel<bf16, bg::kFastCols, Tune>;
  const auto bwd = bg::backward_kernel<bf16, bg::kFastCols, Tune>;
  const int fwd_per_sm = bg::blocks_per_sm(fwd), bwd_per_sm = bg::blocks_per_sm(bwd);
  const dim3 fgrid(static_cast<unsigned>(bg::row_groups(b.rows, tiles, fwd_per_sm, b.rows)),
                   static_cast<unsigned>(tiles));
  const dim3 bgrid(
      static_cast<unsigned>(bg::row_groups(b.rows, tiles, bwd_per_sm, bg::kMaxPartialRows)),
      static_cast<unsigned>(tiles));
  const float f_ms = median_ms([&] { fwd<<<fgrid, block>>>(b.rows, b.cols, b.h0, b.bias, b.y); });
  const float b_ms = median_ms(
      [&] { bwd<<<bgrid, block>>>(b.rows, b.cols, b.dy, b.h0, b.bias, b.dh, b.partial); });
  const double elems = static_cast<double>(b.rows) * static_cast<double>(b.cols);
  const double f_gb = 2 * elems * sizeof(bf16) / 1e9, b_gb = 3 * elems * sizeof(bf16) / 1e9;
  Outputs out{to_host(b.y, static_cast<size_t>(elems)), to_host(b.dh, static_cast<size_t>(elems))};
  std::printf(
      "%-28s fwd %7.4f ms %6.2f TB/s (%d blocks/SM)  bwd %7.4f ms %6.2f TB/s (%d blocks/SM)", name,
      f_ms, f_gb / f_ms, fwd_per_sm, b_ms, b_gb / b_ms, bwd_per_sm);
  if (baseline != nullptr) {
    std::printf("  rel L2 vs erff: y %.2e dh %.2e", rel_l2(out.y, baseline->y),
                rel_l2(out.dh, baseline->dh));
  }
  std::printf("\n");
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Buffers b{argc > 1 ? std::atoll(argv[1]) : 65536,
            argc > 2 ? std::atoll(argv[2]) : 2048,
            nullptr,
            nullptr,
            nullptr,
            nullptr,
            nullptr,
            nullptr};
  if (b.rows < 1 || b.cols < 1 || b.cols % bg::kFastCols != 0) {
    std::fprintf(stderr,
                 "usage: bias_gelu_variants [rows cols]: rows >= 1, cols a multiple of 8\n");
    return 2;
  }
  const auto n = static_cast<size_t>(b.rows * b.cols);
  for (bf16** p : {&b.h0, &b.dy, &b.y, &b.dh}) check(cudaMalloc(p, n * sizeof(bf16)), "malloc");
  check(cudaMalloc(&b.bias, static_cast<size_t>(b.cols) * sizeof(float)), "malloc");
  check(cudaMalloc(&b.partial, static_cast<size_t>(bg::kMaxPartialRows * b.cols) * sizeof(float)),
        "malloc");
  {  // Random inputs: h0 ~ N(0, 2) (pre-activations on both sides of erf's branch), dy ~ N(0, 1).
    std::mt19937 rng(7);
    std::normal_distribution<float> wide(0.f, 2.f), unit(0.f, 1.f);
    std::vector<bf16> h(n), g(n);
    for (size_t i = 0; i < n; ++i)
      h[i] = __float2bfloat16(wide(rng)), g[i] = __float2bfloat16(unit(rng));
    std::vector<float> bias(static_cast<size_t>(b.cols));
    for (auto& x : bias) x = 0.1f * unit(rng);
    check(cudaMemcpy(b.h0, h.data(), n * sizeof(bf16), cudaMemcpyHostToDevice), "upload");
    check(cudaMemcpy(b.dy, g.data(), n * sizeof(bf16), cudaMemcpyHostToDevice), "upload");
    check(cudaMemcpy(b.bias, bias.data(), bias.size() * sizeof(float), cudaMemcpyHostToDevice),
          "upload");
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "properties");
  std::printf("bias_gelu_variants: %s, %lld x %lld bf16 (fwd moves 2, bwd 3 x %.1f MB)\n",
              prop.name, static_cast<long long>(b.rows), static_cast<long long>(b.cols),
              static_cast<double>(n * sizeof(bf16)) / 1e6);
  const float copy_ms = median_ms([&] {
    check(cudaMemcpyAsync(b.y, b.h0, n * sizeof(bf16), cudaMemcpyDeviceToDevice), "copy");
  });
  std::printf("%-28s     %7.4f ms %6.2f TB/s (read + write)\n", "device-to-device copy", copy_ms,
              2.0 * static_cast<double>(n * sizeof(bf16)) / 1e9 / copy_ms);
  // GeluTuning<rows in flight, min blocks per SM, fast erf>.
  const Outputs base = run<bg::GeluTuning<2, 1, false>>("erff, rows 2 (before)", b, nullptr);
  run<bg::GeluTuning<1, 1, false>>("erff, rows 1", b, &base);
  run<bg::GeluTuning<2, 1, true>>("fast erf, rows 2", b, &base);
  run<bg::GeluTuning<1, 1, true>>("fast erf, rows 1", b, &base);
  run<bg::GeluTuning<4, 1, true>>("fast erf, rows 4", b, &base);
  run<bg::GeluTuning<2, 3, true>>("fast erf, rows 2, >= 3/SM", b, &base);
  run<bg::GeluTuning<1, 4, true>>("fast erf, rows 1, >= 4/SM", b, &base);
  run<bg::GeluTuning<4, 2, true>>("fast erf, rows 4, >= 2/SM", b, &base);
  return 0;
}
