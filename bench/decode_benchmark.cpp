// Google Benchmark: one decode step of attention (the single-query decode kernel, float32,
// one layer) over a KV cache of n tokens, dense (all n keys) vs Fibonacci (W = 32 plus the
// Fibonacci offsets up to n), 1 request, the tiny model's 4 heads of head_dim 32, n = 1k ..
// 1M. Dense reads n keys per query; Fibonacci W + K (K grows like log n), so its time per
// step should stay flat. cache_MiB is this layer's key + value cache (2 * n * 128 floats).
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "kernels/cpu/decode_attention.hpp"
#include "pattern/dilated_offsets.hpp"

namespace {

constexpr int64_t kHeads = 4, kDim = 32, kWindow = 32;

struct Cache {
  int64_t n = 0;
  std::vector<float> q, k, v, out;
};

// One cache at a time (1M tokens is 1 GiB of keys and values): reused across the families.
Cache& cache_of(int64_t n) {
  static Cache cache;
  if (cache.n != n) {
    std::mt19937_64 rng(0);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    cache = {};
    cache.n = n;
    cache.q.resize(kHeads * kDim);
    cache.out.resize(kHeads * kDim);
    cache.k.resize(static_cast<size_t>(kHeads * n * kDim));
    cache.v.resize(cache.k.size());
    for (auto* x : {&cache.q, &cache.k, &cache.v}) {
      for (auto& e : *x) e = normal(rng);
    }
  }
  return cache;
}

void decode_step(benchmark::State& state, bool dense) {
  const int64_t n = state.range(0);
  auto& c = cache_of(n);
  std::vector<double> offsets;
  if (!dense) {
    const auto ints =
        reach::pattern::integer_offsets({reach::pattern::OffsetBase::fibonacci, 1.0, kWindow, n});
    offsets.assign(ints.begin(), ints.end());
  }
  const int64_t length = n;
  reach::kernels::DecodeAttentionParams p;
  p.batch = 1;
  p.heads = kHeads;
  p.kv_heads = kHeads;
  p.head_dim = kDim;
  p.capacity = n;
  p.lengths = &length;
  p.window = dense ? n : kWindow;
  p.offsets = offsets.data();
  p.num_offsets = static_cast<int64_t>(offsets.size());
  p.scale = 0.17677669529663687;  // 1 / sqrt(32)
  int64_t keys_read[kHeads];
  for (auto _ : state) {
    reach::kernels::decode_attention_cpu<float>(p, c.q.data(), c.k.data(), c.v.data(), c.out.data(),
                                                keys_read);
    benchmark::DoNotOptimize(c.out.data());
  }
  state.counters["keys_per_query"] = static_cast<double>(keys_read[0]);
  state.counters["cache_MiB"] = 2.0 * static_cast<double>(n * kHeads * kDim) * 4.0 / (1 << 20);
}

void BM_DecodeDense(benchmark::State& state) { decode_step(state, true); }
void BM_DecodeFibonacci(benchmark::State& state) { decode_step(state, false); }

// Increasing n per family; each family's runs share the cache of one n at a time.
BENCHMARK(BM_DecodeFibonacci)
    ->RangeMultiplier(4)
    ->Range(1 << 10, 1 << 20)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DecodeDense)
    ->RangeMultiplier(4)
    ->Range(1 << 10, 1 << 20)
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
