// `reach bench entmax`: alpha-entmax (ASEntmax scaling) attention over the window + Fibonacci
// key set on the CPU, forward and forward+backward, beside softmax over the same keys, to show
// O(n (W + K)) time and memory.
#include <fmt/core.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <random>

#include "cli/commands.hpp"
#include "cli/validators.hpp"
#include "eval/peak_memory.hpp"
#include "kernels/cpu/dilated_attention.hpp"
#include "kernels/cpu/entmax_attention.hpp"
#include "pattern/dilated_offsets.hpp"

namespace reach::cli {
namespace {

struct EntmaxBenchOptions {
  std::vector<int64_t> lengths{4096, 16384, 65536};
  int64_t heads = 8;
  int64_t head_dim = 64;
  int64_t window = 64;
  double alpha = 1.5;
  int repeats = 3;
};

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

void run(const EntmaxBenchOptions& o) {
  fmt::print(
      "alpha-entmax (alpha={}, ASEntmax scaling) vs softmax over window {} + Fibonacci "
      "offsets to n; {} heads, head_dim {}, float32, {} threads\n",
      o.alpha, o.window, o.heads, o.head_dim, omp_get_max_threads());
  fmt::print("{:>7}  {:>6}  {:>12}  {:>12}  {:>13}  {:>13}  {:>10}\n", "n", "keys/q", "entmax fwd",
             "entmax f+b", "softmax fwd", "softmax f+b", "peak MiB");
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
    const double ef = median_ms(entmax_fwd, reps), eb = median_ms(entmax_fb, reps);
    const double sf = median_ms(soft_fwd, reps), sb = median_ms(soft_fb, reps);
    double peak = 0;
    {
      eval::RssFollowsAllocations tracking;
      eval::reset_peak_rss();
      const int64_t base = eval::current_rss_bytes();
      entmax_fb();
      peak = static_cast<double>(eval::peak_rss_bytes() - base) / (1024.0 * 1024.0);
    }
    fmt::print("{:>7}  {:>6}  {:>10.1f}ms  {:>10.1f}ms  {:>11.1f}ms  {:>11.1f}ms  {:>10.0f}\n", n,
               std::min(o.window, n) + static_cast<int64_t>(offsets.size()), ef, eb, sf, sb, peak);
  }
  fmt::print("peak MiB = resident memory above the inputs during one entmax forward+backward\n");
}

}  // namespace

void add_bench_entmax_command(CLI::App& app) {
  auto* bench = app.get_subcommand("bench");
  auto o = std::make_shared<EntmaxBenchOptions>();
  auto* cmd = bench->add_subcommand("entmax",
                                    "Time alpha-entmax attention over the Fibonacci key set (CPU)");
  cmd->add_option("--lengths", o->lengths, "Sequence lengths")->delimiter(',')->check(positive());
  cmd->add_option("--heads", o->heads, "Heads (batch 1)")->check(positive());
  cmd->add_option("--head-dim", o->head_dim, "Head dimension")->check(positive());
  cmd->add_option("--window", o->window, "Local window W")->check(positive());
  cmd->add_option("--alpha", o->alpha, "entmax alpha in (1, 2]");
  cmd->add_option("--repeats", o->repeats, "Timed repetitions (median)")->check(positive());
  cmd->callback([o] { run(*o); });
}

}  // namespace reach::cli
