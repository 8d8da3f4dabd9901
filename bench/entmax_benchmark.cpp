// Google Benchmark: alpha-entmax attention (CPU kernel, float32) over the Fibonacci key
// set (W = 64 plus Fibonacci offsets up to n), batch 1, 8 heads, head_dim 64, alpha 1.5
// with ASEntmax log-n scaling, at n = 4k, 16k, 64k. Work is O(n (W + K) d): time per
// token should stay flat as n grows (K grows only like log n). peak_rss_MiB is the
// process's peak resident memory so far (args run in increasing n, so it is the peak
// at that n): inputs, outputs and gradients are 7 tensors of n * 8 * 64 floats.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <random>
#include <vector>

#include "kernels/cpu/entmax_attention.hpp"
#include "pattern/dilated_offsets.hpp"

namespace {

constexpr int64_t kHeads = 8, kDim = 64, kWindow = 64;

struct Inputs {
  std::vector<float> q, k, v, grad;
  std::vector<double> offsets, alpha, delta, beta, gamma;
  reach::kernels::EntmaxAttentionParams params;
};

Inputs make_inputs(int64_t n) {
  Inputs in;
  std::mt19937_64 rng(0);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const auto size = static_cast<size_t>(kHeads * n * kDim);
  for (auto* x : {&in.q, &in.k, &in.v, &in.grad}) {
    x->resize(size);
    for (auto& e : *x) e = normal(rng);
  }
  const auto ints =
      reach::pattern::integer_offsets({reach::pattern::OffsetBase::fibonacci, 1.0, kWindow, n});
  in.offsets.assign(ints.begin(), ints.end());
  in.alpha.assign(kHeads, 1.5);
  in.delta.assign(kHeads, 1.0);
  in.beta.assign(kHeads, 0.1);
  in.gamma.assign(kHeads, 1.0);
  auto& p = in.params;
  p.base.batch_heads = kHeads;
  p.base.seq_len = n;
  p.base.head_dim = kDim;
  p.base.window = kWindow;
  p.base.offsets = in.offsets.data();
  p.base.num_offsets = static_cast<int64_t>(in.offsets.size());
  p.base.scale = 0.125;
  p.num_heads = kHeads;
  p.alpha = in.alpha.data();
  p.log_n_scaling = true;
  p.delta = in.delta.data();
  p.beta = in.beta.data();
  p.gamma = in.gamma.data();
  return in;
}

void report(benchmark::State& state, const Inputs& in) {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  state.counters["peak_rss_MiB"] = static_cast<double>(usage.ru_maxrss) / 1024.0;
  state.counters["slots"] = static_cast<double>(in.params.base.slots());
  state.counters["time_per_token"] = benchmark::Counter(
      static_cast<double>(state.range(0)),
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void BM_EntmaxSparseForward(benchmark::State& state) {
  const auto in = make_inputs(state.range(0));
  std::vector<float> out(in.q.size());
  for (auto _ : state) {
    reach::kernels::entmax_attention_forward_cpu<float>(in.params, in.q.data(), in.k.data(),
                                                        in.v.data(), out.data());
    benchmark::DoNotOptimize(out.data());
  }
  report(state, in);
}

void BM_EntmaxSparseBackward(benchmark::State& state) {
  const auto in = make_inputs(state.range(0));
  std::vector<float> gq(in.q.size()), gk(in.q.size()), gv(in.q.size());
  std::vector<double> ga(kHeads), gd(kHeads), gb(kHeads), gg(kHeads);
  for (auto _ : state) {
    reach::kernels::entmax_attention_backward_cpu<float>(
        in.params, in.q.data(), in.k.data(), in.v.data(), in.grad.data(), gq.data(), gk.data(),
        gv.data(), ga.data(), gd.data(), gb.data(), gg.data());
    benchmark::DoNotOptimize(gq.data());
  }
  report(state, in);
}

BENCHMARK(BM_EntmaxSparseForward)
    ->Arg(4096)
    ->Arg(16384)
    ->Arg(65536)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_EntmaxSparseBackward)
    ->Arg(4096)
    ->Arg(16384)
    ->Arg(65536)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
