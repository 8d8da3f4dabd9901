#include "bench/attention_latency.hpp"

#include <fmt/core.h>
#include <torch/cuda.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include "bench/memory_budget.hpp"
#include "bench/peak_memory.hpp"
#include "ops/dilated_attention.hpp"

namespace reach::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Wall time of fn; on a GPU the device is synchronised before and after, so the time is
// that of the kernels fn launched.
double time_ms(const std::function<void()>& fn, bool cuda) {
  if (cuda) torch::cuda::synchronize();
  const auto t0 = Clock::now();
  fn();
  if (cuda) torch::cuda::synchronize();
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double median_ms(const std::function<void()>& fn, int repeats, bool cuda) {
  fn();  // warm-up
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) times.push_back(time_ms(fn, cuda));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

double peak_mib_of(const std::function<void()>& fn) {
  RssFollowsAllocations tracking;
  reset_peak_rss();
  const int64_t base = current_rss_bytes();
  fn();
  return static_cast<double>(std::max<int64_t>(0, peak_rss_bytes() - base)) / (1024.0 * 1024.0);
}

}  // namespace

void validate(const AttentionBenchConfig& c) {
  if (c.repeats < 1) throw std::invalid_argument("repeats must be >= 1");
  if (c.batch < 1 || c.heads < 1 || c.head_dim < 1 || c.window < 1) {
    throw std::invalid_argument("batch, heads, head_dim and window must be >= 1");
  }
  if (c.reach < 0) {
    throw std::invalid_argument("reach must be > 0 (or 0 for reach = n), got " +
                                std::to_string(c.reach));
  }
  if (c.lengths.empty()) throw std::invalid_argument("lengths: give at least one length");
  if (c.device != "cpu" && c.device != "cuda") {
    throw std::invalid_argument("device must be cpu or cuda, got '" + c.device + "'");
  }
  const bool cuda = c.device == "cuda";
  if (cuda && !torch::cuda::is_available()) {
    throw std::invalid_argument(
        "device cuda: no CUDA GPU is visible to this LibTorch (a CPU-only build, or no GPU)");
  }
  const bool bf16_ok = cuda;
  if (c.dtype != "float32" && c.dtype != "float64" && !(bf16_ok && c.dtype == "bfloat16")) {
    throw std::invalid_argument("dtype must be float32 or float64" +
                                std::string(cuda ? " or bfloat16" : " (bfloat16 on cuda only)") +
                                ", got '" + c.dtype + "'");
  }
  const int64_t elem = c.dtype == "float64" ? 8 : c.dtype == "float32" ? 4 : 2;
  for (const int64_t n : c.lengths) {
    if (n < 1) throw std::invalid_argument("lengths must be >= 1, got " + std::to_string(n));
    // q, k, v, the output gradient, the output and q, k, v's gradients, at the least.
    require_fits("length n = " + std::to_string(n), {c.batch, c.heads, n, c.head_dim}, 8, elem,
                 cuda);
    const int64_t reach = c.reach > 0 ? c.reach : std::max(n, c.window);
    pattern::validate(
        pattern::DilationSpec{pattern::parse_offset_base(c.base), c.alpha, c.window, reach});
  }
}

std::vector<AttentionBenchRow> run_attention_benchmark(
    const AttentionBenchConfig& c, const std::function<void(const std::string&)>& progress) {
  validate(c);
  const bool cuda = c.device == "cuda";
  const auto dtype = c.dtype == "float32"   ? torch::kFloat32
                     : c.dtype == "float64" ? torch::kFloat64
                                            : torch::kBFloat16;
  const int64_t elem = c.dtype == "float64" ? 8 : c.dtype == "float32" ? 4 : 2;
  auto median = [&](const std::function<void()>& fn, int repeats) {
    return median_ms(fn, repeats, cuda);
  };
  auto peak = [&](const std::function<void()>& fn) {
    return cuda ? gpu_peak_mib_of(fn) : peak_mib_of(fn);
  };
  // Dense causal attention: fused SDPA on a GPU where LibTorch has it, else matmul + mask.
  auto dense_attention = [&](const torch::Tensor& q, const torch::Tensor& k,
                             const torch::Tensor& v) {
#if TORCH_VERSION_MAJOR >= 2
    if (cuda) return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
#endif
    return ops::dense_causal_attention(q, k, v);
  };
  torch::NoGradGuard no_grad_outer;
  std::vector<AttentionBenchRow> rows;
  for (int64_t n : c.lengths) {
    torch::manual_seed(static_cast<uint64_t>(n));
    const auto opts = torch::TensorOptions().dtype(dtype).device(cuda ? torch::kCUDA : torch::kCPU);
    const torch::Tensor q = torch::randn({c.batch, c.heads, n, c.head_dim}, opts);
    const torch::Tensor k = torch::randn({c.batch, c.heads, n, c.head_dim}, opts);
    const torch::Tensor v = torch::randn({c.batch, c.heads, n, c.head_dim}, opts);
    const torch::Tensor grad = torch::randn({c.batch, c.heads, n, c.head_dim}, opts);
    const int64_t reach = c.reach > 0 ? c.reach : std::max(n, c.window);
    const auto ints =
        pattern::integer_offsets({pattern::parse_offset_base(c.base), c.alpha, c.window, reach});
    const torch::Tensor offsets =
        torch::tensor(std::vector<double>(ints.begin(), ints.end()), torch::kFloat64);

    // Sparse rows: static integer offsets, and the learned schedule's fractional offsets
    // (alpha nudged off integers; interpolated keys/values plus d loss / d offsets).
    auto measure_sparse = [&](const std::string& impl, const torch::Tensor& offs) {
      AttentionBenchRow row;
      row.impl = impl;
      row.seq_len = n;
      row.keys_per_query = std::min(c.window, n) + offs.numel();
      progress(fmt::format("{} n={} (W={}, K={})", impl, n, c.window, offs.numel()));
      const int reps = n >= 32768 ? std::max(1, c.repeats / 2) : c.repeats;
      row.forward_ms = median([&] { (void)ops::dilated_attention(q, k, v, c.window, offs); }, reps);
      auto fwd_bwd = [&] {
        torch::AutoGradMode grad_mode(true);
        auto qg = q.detach().requires_grad_(), kg = k.detach().requires_grad_(),
             vg = v.detach().requires_grad_();
        auto og = impl == "learned" ? offs.detach().requires_grad_() : offs;
        ops::dilated_attention(qg, kg, vg, c.window, og).backward(grad);
      };
      row.fwd_bwd_ms = median(fwd_bwd, reps);
      row.peak_mib = peak(fwd_bwd);
      row.ran = true;
      rows.push_back(row);
    };
    measure_sparse("sparse", offsets);
    if (c.learned) {
      const auto frac = pattern::fractional_offsets(
          {pattern::parse_offset_base(c.base), c.alpha * 1.01, c.window, reach});
      measure_sparse("learned", torch::tensor(frac.distances, torch::kFloat64));
    }

    AttentionBenchRow row;
    row.impl = "dense";
    row.seq_len = n;
    row.keys_per_query = n;
    // Forward+backward keeps about four n x n buffers per head (scores, probabilities
    // and their gradients) plus the boolean mask.
    // (FlashAttention on a GPU keeps none of them: no chunking needed there.)
    const double per_head = cuda ? 0.0
                                 : 4.0 * static_cast<double>(n) * static_cast<double>(n) *
                                       static_cast<double>(elem * c.batch);
    const double budget = c.dense_memory_gib * 1024.0 * 1024.0 * 1024.0;
    row.heads_per_chunk = per_head == 0.0
                              ? c.heads
                              : std::min<int64_t>(c.heads, static_cast<int64_t>(budget / per_head));
    if (!c.dense) {
      row.note = "not run (--no-dense)";
    } else if (row.heads_per_chunk < 1) {
      row.note = fmt::format("does not fit: one head needs ~{:.0f} GiB (budget {:.0f} GiB)",
                             per_head / (1024.0 * 1024.0 * 1024.0), c.dense_memory_gib);
    } else {
      progress(fmt::format("dense  n={} ({} heads per chunk)", n, row.heads_per_chunk));
      const int64_t hc = row.heads_per_chunk;
      auto forward = [&] {
        for (int64_t h0 = 0; h0 < c.heads; h0 += hc) {
          const int64_t len = std::min(hc, c.heads - h0);
          (void)dense_attention(q.narrow(1, h0, len), k.narrow(1, h0, len), v.narrow(1, h0, len));
        }
      };
      auto fwd_bwd = [&] {
        torch::AutoGradMode grad_mode(true);
        for (int64_t h0 = 0; h0 < c.heads; h0 += hc) {
          const int64_t len = std::min(hc, c.heads - h0);
          auto qg = q.narrow(1, h0, len).detach().requires_grad_();
          auto kg = k.narrow(1, h0, len).detach().requires_grad_();
          auto vg = v.narrow(1, h0, len).detach().requires_grad_();
          dense_attention(qg, kg, vg).backward(grad.narrow(1, h0, len));
        }
      };
      const int reps = n >= 8192 && !cuda ? 1 : c.repeats;
      row.forward_ms = median(forward, reps);
      row.fwd_bwd_ms = median(fwd_bwd, reps);
      row.peak_mib = peak(fwd_bwd);
      row.ran = true;
    }
    rows.push_back(row);
  }
  return rows;
}

}  // namespace reach::bench
