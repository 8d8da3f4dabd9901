#include "bench/entmax_latency.hpp"

#include <fmt/core.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <stdexcept>
#include <string>

#include "bench/memory_budget.hpp"
#include "bench/peak_memory.hpp"
#include "kernels/cpu/dilated_attention.hpp"
#include "kernels/cpu/entmax_attention.hpp"
#include "pattern/dilated_offsets.hpp"

namespace reach::bench {
namespace {

double median_ms(const std::function<void()>& fn, int repeats) {
  fn();
  std::vector<double> t;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

void validate(const EntmaxBenchConfig& c) {
  if (!(c.alpha > 1.0 && c.alpha <= 2.0)) {
    throw std::invalid_argument(fmt::format("alpha must be in (1, 2], got {}", c.alpha));
  }
  if (c.heads < 1 || c.head_dim < 1 || c.window < 1 || c.repeats < 1) {
    throw std::invalid_argument("heads, head_dim, window and repeats must be >= 1");
  }
  for (const int64_t n : c.lengths) {
    if (n < 1) throw std::invalid_argument("lengths must be >= 1, got " + std::to_string(n));
    // q, k, v, grad, out, dq, dk, dv in float32.
    require_fits("length n = " + std::to_string(n), {c.heads, n, c.head_dim}, 8, 4, false);
  }
}

void run_entmax_benchmark(const EntmaxBenchConfig& o,
                          const std::function<void(const EntmaxBenchRow&)>& report) {
  validate(o);
  for (int64_t n : o.lengths) {
    const auto ints = pattern::integer_offsets(
        {pattern::OffsetBase::fibonacci, 1.0, o.window, std::max(n, o.window)});
    std::vector<double> offsets(ints.begin(), ints.end());
    kernels::DilatedAttentionParams p{o.heads,
                                      n,
                                      o.head_dim,
                                      o.window,
                                      offsets.data(),
                                      static_cast<int64_t>(offsets.size()),
                                      1.0 / std::sqrt(static_cast<double>(o.head_dim))};
    std::vector<double> alpha(o.heads, o.alpha), delta(o.heads, 1.0), beta(o.heads, 0.1),
        gamma(o.heads, 1.0);
    kernels::EntmaxAttentionParams e;
    e.base = p;
    e.num_heads = o.heads;
    e.alpha = alpha.data();
    e.log_n_scaling = true;
    e.delta = delta.data();
    e.beta = beta.data();
    e.gamma = gamma.data();
    const size_t size = static_cast<size_t>(o.heads * n * o.head_dim);
    std::mt19937 rng(static_cast<unsigned>(n));
    std::normal_distribution<float> normal;
    std::vector<float> q(size), k(size), v(size), g(size), out(size), dq(size), dk(size), dv(size),
        lse(static_cast<size_t>(o.heads * n));
    for (auto* x : {&q, &k, &v, &g}) {
      for (auto& e_ : *x) e_ = normal(rng);
    }
    std::vector<double> ga(o.heads), gd(o.heads), gb(o.heads), gg(o.heads);
    auto entmax_fwd = [&] {
      kernels::entmax_attention_forward_cpu<float>(e, q.data(), k.data(), v.data(), out.data());
    };
    auto entmax_fb = [&] {
      entmax_fwd();
      kernels::entmax_attention_backward_cpu<float>(e, q.data(), k.data(), v.data(), g.data(),
                                                    dq.data(), dk.data(), dv.data(), ga.data(),
                                                    gd.data(), gb.data(), gg.data());
    };
    auto soft_fwd = [&] {
      kernels::dilated_attention_forward_cpu<float>(p, q.data(), k.data(), v.data(), out.data(),
                                                    lse.data());
    };
    auto soft_fb = [&] {
      soft_fwd();
      kernels::dilated_attention_backward_cpu<float>(p, q.data(), k.data(), v.data(), out.data(),
                                                     lse.data(), g.data(), dq.data(), dk.data(),
                                                     dv.data(), nullptr);
    };
    const int reps = n >= 32768 ? 1 : o.repeats;
    EntmaxBenchRow row;
    row.seq_len = n;
    row.keys_per_query = std::min(o.window, n) + static_cast<int64_t>(offsets.size());
    row.entmax_forward_ms = median_ms(entmax_fwd, reps);
    row.entmax_fwd_bwd_ms = median_ms(entmax_fb, reps);
    row.softmax_forward_ms = median_ms(soft_fwd, reps);
    row.softmax_fwd_bwd_ms = median_ms(soft_fb, reps);
    {
      RssFollowsAllocations tracking;
      reset_peak_rss();
      const int64_t base = current_rss_bytes();
      entmax_fb();
      row.peak_mib = static_cast<double>(peak_rss_bytes() - base) / (1024.0 * 1024.0);
    }
    report(row);
  }
}

}  // namespace reach::bench
