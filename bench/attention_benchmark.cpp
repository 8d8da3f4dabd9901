// Google Benchmark: sparse dilated attention vs dense causal attention, forward and
// forward+backward, batch 1, 8 heads, head_dim 64, W = 64, Fibonacci offsets to n.
// `reach bench attention` is the fuller table (peak memory, chunked dense at 16k).
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <thread>

#include "ops/dilated_attention.hpp"

namespace {

struct Inputs {
  torch::Tensor q, k, v, grad, offsets;
};

Inputs make_inputs(int64_t n) {
  torch::manual_seed(0);
  Inputs in;
  in.q = torch::randn({1, 8, n, 64});
  in.k = torch::randn({1, 8, n, 64});
  in.v = torch::randn({1, 8, n, 64});
  in.grad = torch::randn({1, 8, n, 64});
  const auto ints =
      reach::pattern::integer_offsets({reach::pattern::OffsetBase::fibonacci, 1.0, 64, n});
  in.offsets = torch::tensor(std::vector<double>(ints.begin(), ints.end()), torch::kFloat64);
  return in;
}

void BM_SparseForward(benchmark::State& state) {
  const auto in = make_inputs(state.range(0));
  torch::NoGradGuard no_grad;
  for (auto _ : state) {
    benchmark::DoNotOptimize(reach::ops::dilated_attention(in.q, in.k, in.v, 64, in.offsets));
  }
}

void BM_DenseForward(benchmark::State& state) {
  const auto in = make_inputs(state.range(0));
  torch::NoGradGuard no_grad;
  for (auto _ : state) {
    benchmark::DoNotOptimize(reach::ops::dense_causal_attention(in.q, in.k, in.v));
  }
}

void BM_SparseForwardBackward(benchmark::State& state) {
  const auto in = make_inputs(state.range(0));
  for (auto _ : state) {
    auto q = in.q.detach().requires_grad_(), k = in.k.detach().requires_grad_(),
         v = in.v.detach().requires_grad_();
    reach::ops::dilated_attention(q, k, v, 64, in.offsets).backward(in.grad);
  }
}

void BM_DenseForwardBackward(benchmark::State& state) {
  const auto in = make_inputs(state.range(0));
  for (auto _ : state) {
    auto q = in.q.detach().requires_grad_(), k = in.k.detach().requires_grad_(),
         v = in.v.detach().requires_grad_();
    reach::ops::dense_causal_attention(q, k, v).backward(in.grad);
  }
}

BENCHMARK(BM_SparseForward)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DenseForward)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SparseForwardBackward)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DenseForwardBackward)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  // Same threads for both paths: LibTorch 1.13 may start with one intra-op thread.
  torch::set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
