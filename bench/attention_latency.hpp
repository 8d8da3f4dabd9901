// Latency and peak memory of sparse dilated attention against dense exact causal
// attention, forward and forward+backward, measured side by side in one process. On the
// CPU dense is LibTorch matmul + mask + softmax; on a CUDA GPU it is LibTorch's fused
// scaled_dot_product_attention (FlashAttention for bf16), every timing is bracketed by
// device synchronisations, and peak memory is the GPU memory LibTorch's caching allocator
// handed out above the inputs.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace reach::bench {

struct AttentionBenchConfig {
  std::vector<int64_t> lengths{1024, 4096, 16384, 65536};
  int64_t batch = 1;
  int64_t heads = 8;
  int64_t head_dim = 64;
  int64_t window = 64;
  int64_t reach = 0;  // 0: reach = n (offsets span the whole sequence)
  double alpha = 1.0;
  std::string base = "fibonacci";
  std::string dtype = "float32";  // float32, float64; bfloat16 on cuda
  std::string device = "cpu";     // cpu or cuda
  int repeats = 3;
  double dense_memory_gib = 12.0;  // dense runs head-chunked to stay under this; else skipped
  bool dense = true;
  bool learned = true;  // also time the learned schedule's fractional offsets
};

struct AttentionBenchRow {
  std::string impl;  // "sparse" (static offsets), "learned" (fractional offsets) or "dense"
  int64_t seq_len = 0;
  int64_t keys_per_query = 0;  // sparse: W + K (dense: n, the maximum)
  bool ran = false;
  std::string note;
  double forward_ms = 0;  // median
  double fwd_bwd_ms = 0;  // median
  double peak_mib = 0;    // peak RSS (CPU) or GPU allocation above the inputs, forward+backward
  int64_t heads_per_chunk = 0;  // dense only
};

// Throws std::invalid_argument naming a bad field, or a length whose tensors cannot fit,
// before any work (run_attention_benchmark calls it first).
void validate(const AttentionBenchConfig& config);

// Runs the benchmark; `progress` receives one line per measurement started.
std::vector<AttentionBenchRow> run_attention_benchmark(
    const AttentionBenchConfig& config, const std::function<void(const std::string&)>& progress);

}  // namespace reach::bench
