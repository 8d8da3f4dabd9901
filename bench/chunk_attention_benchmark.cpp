// Google Benchmark: hierarchical chunk sparse attention (CPU kernel, float32), batch 1,
// 8 query heads over 2 KV heads, head_dim 64, retrieval_dim 64, S = 64, k = 8, at n = 1k, 4k,
// 16k. The attention work per token is flat (k * S keys per head); the landmark scoring grows
// like n / S per token. peak_rss_MiB is the process's peak resident memory so far (args run
// in increasing n, so it is the peak at that n).
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <random>
#include <vector>

#include "kernels/cpu/chunk_attention.hpp"

namespace {

using reach::kernels::ChunkAttentionParams;

struct Inputs {
  std::vector<float> q, k, v, r, l, grad, out, weights, lse;
  std::vector<int64_t> indices;
  ChunkAttentionParams params;
};

Inputs make_inputs(int64_t n) {
  Inputs in;
  auto& p = in.params;
  p.batch = 1;
  p.query_heads = 8;
  p.kv_heads = 2;
  p.seq_len = n;
  p.head_dim = 64;
  p.retrieval_dim = 64;
  p.selection = {64, 8, 0};
  p.scale = 0.125;
  p.retrieval_scale = 0.125;
  std::mt19937_64 rng(0);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto fill = [&](std::vector<float>& x, int64_t size) {
    x.resize(static_cast<size_t>(size));
    for (auto& e : x) e = normal(rng);
  };
  fill(in.q, 8 * n * 64);
  fill(in.grad, 8 * n * 64);
  fill(in.k, 2 * n * 64);
  fill(in.v, 2 * n * 64);
  fill(in.r, 2 * n * 64);
  fill(in.l, 2 * p.chunks() * 64);
  in.out.resize(in.q.size());
  in.indices.resize(static_cast<size_t>(2 * n * 8));
  in.weights.resize(in.indices.size());
  in.lse.resize(static_cast<size_t>(8 * n * 8));
  return in;
}

void forward(Inputs& in) {
  reach::kernels::chunk_attention_forward_cpu<float>(
      in.params, in.q.data(), in.k.data(), in.v.data(), in.r.data(), in.l.data(), in.out.data(),
      in.indices.data(), in.weights.data(), in.lse.data());
}

void report(benchmark::State& state) {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  state.counters["peak_rss_MiB"] = static_cast<double>(usage.ru_maxrss) / 1024.0;
  state.counters["time_per_token"] = benchmark::Counter(
      static_cast<double>(state.range(0)),
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void BM_ChunkForward(benchmark::State& state) {
  auto in = make_inputs(state.range(0));
  for (auto _ : state) {
    forward(in);
    benchmark::DoNotOptimize(in.out.data());
  }
  report(state);
}

void BM_ChunkBackward(benchmark::State& state) {
  auto in = make_inputs(state.range(0));
  forward(in);
  std::vector<float> gq(in.q.size()), gk(in.k.size()), gv(in.v.size()), gr(in.r.size()),
      gl(in.l.size());
  for (auto _ : state) {
    reach::kernels::chunk_attention_backward_cpu<float>(
        in.params, in.q.data(), in.k.data(), in.v.data(), in.r.data(), in.l.data(), in.grad.data(),
        in.indices.data(), in.weights.data(), in.lse.data(), gq.data(), gk.data(), gv.data(),
        gr.data(), gl.data());
    benchmark::DoNotOptimize(gq.data());
  }
  report(state);
}

BENCHMARK(BM_ChunkForward)
    ->Arg(1024)
    ->Arg(4096)
    ->Arg(16384)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_ChunkBackward)
    ->Arg(1024)
    ->Arg(4096)
    ->Arg(16384)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
