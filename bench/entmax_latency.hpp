// Latency and peak memory of alpha-entmax attention (ASEntmax log-n scaling) over the window +
// Fibonacci key set on the CPU, forward and forward+backward, beside softmax over the same keys
// (float32, batch 1): time and memory O(n (W + K)). Run by `reach bench entmax`.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace reach::bench {

struct EntmaxBenchConfig {
  std::vector<int64_t> lengths{4096, 16384, 65536};
  int64_t heads = 8;
  int64_t head_dim = 64;
  int64_t window = 64;
  double alpha = 1.5;
  int repeats = 3;
};

struct EntmaxBenchRow {
  int64_t seq_len = 0;
  int64_t keys_per_query = 0;
  double entmax_forward_ms = 0, entmax_fwd_bwd_ms = 0;  // medians
  double softmax_forward_ms = 0, softmax_fwd_bwd_ms = 0;
  double peak_mib = 0;  // resident memory above the inputs during one entmax forward+backward
};

// Throws std::invalid_argument naming a bad field (before any work).
void validate(const EntmaxBenchConfig& config);

// Runs the benchmark, calling `row` as each length finishes.
void run_entmax_benchmark(const EntmaxBenchConfig& config,
                          const std::function<void(const EntmaxBenchRow&)>& row);

}  // namespace reach::bench
