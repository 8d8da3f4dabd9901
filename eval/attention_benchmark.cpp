#include "eval/attention_benchmark.hpp"

#include <fmt/core.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include "eval/peak_memory.hpp"
#include "ops/dilated_attention.hpp"

namespace reach::eval {
namespace {

using Clock = std::chrono::steady_clock;

double time_ms(const std::function<void()>& fn) {
  const auto t0 = Clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double median_ms(const std::function<void()>& fn, int repeats) {
  fn();  // warm-up
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) times.push_back(time_ms(fn));
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

std::vector<AttentionBenchRow> run_attention_benchmark(
    const AttentionBenchConfig& c, const std::function<void(const std::string&)>& progress) {
  if (c.repeats < 1) throw std::invalid_argument("repeats must be >= 1");
  if (c.dtype != "float32" && c.dtype != "float64") {
    throw std::invalid_argument("dtype must be float32 or float64, got '" + c.dtype + "'");
  }
  const auto dtype = c.dtype == "float32" ? torch::kFloat32 : torch::kFloat64;
  const int64_t elem = c.dtype == "float32" ? 4 : 8;
  torch::NoGradGuard no_grad_outer;
  std::vector<AttentionBenchRow> rows;
  for (int64_t n : c.lengths) {
    if (n < 1) throw std::invalid_argument("lengths must be >= 1");
    torch::manual_seed(static_cast<uint64_t>(n));
    const auto opts = torch::TensorOptions().dtype(dtype);
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
      row.forward_ms =
          median_ms([&] { (void)ops::dilated_attention(q, k, v, c.window, offs); }, reps);
      auto fwd_bwd = [&] {
        torch::AutoGradMode grad_mode(true);
        auto qg = q.detach().requires_grad_(), kg = k.detach().requires_grad_(),
             vg = v.detach().requires_grad_();
        auto og = impl == "learned" ? offs.detach().requires_grad_() : offs;
        ops::dilated_attention(qg, kg, vg, c.window, og).backward(grad);
      };
      row.fwd_bwd_ms = median_ms(fwd_bwd, reps);
      row.peak_mib = peak_mib_of(fwd_bwd);
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
    const double per_head =
        4.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(elem * c.batch);
    const double budget = c.dense_memory_gib * 1024.0 * 1024.0 * 1024.0;
    row.heads_per_chunk = std::min<int64_t>(c.heads, static_cast<int64_t>(budget / per_head));
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
          (void)ops::dense_causal_attention(q.narrow(1, h0, len), k.narrow(1, h0, len),
                                            v.narrow(1, h0, len));
        }
      };
      auto fwd_bwd = [&] {
        torch::AutoGradMode grad_mode(true);
        for (int64_t h0 = 0; h0 < c.heads; h0 += hc) {
          const int64_t len = std::min(hc, c.heads - h0);
          auto qg = q.narrow(1, h0, len).detach().requires_grad_();
          auto kg = k.narrow(1, h0, len).detach().requires_grad_();
          auto vg = v.narrow(1, h0, len).detach().requires_grad_();
          ops::dense_causal_attention(qg, kg, vg).backward(grad.narrow(1, h0, len));
        }
      };
      const int reps = n >= 8192 ? 1 : c.repeats;
      row.forward_ms = median_ms(forward, reps);
      row.fwd_bwd_ms = median_ms(fwd_bwd, reps);
      row.peak_mib = peak_mib_of(fwd_bwd);
      row.ran = true;
    }
    rows.push_back(row);
  }
  return rows;
}

}  // namespace reach::eval
