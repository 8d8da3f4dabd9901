// `reach bench entmax`: alpha-entmax (ASEntmax scaling) attention over the window + Fibonacci
// key set on the CPU, forward and forward+backward, beside softmax over the same keys, to show
// O(n (W + K)) time and memory (bench/entmax_latency).
#include <fmt/core.h>
#include <omp.h>

#include <memory>

#include "bench/entmax_latency.hpp"
#include "cli/commands.hpp"
#include "cli/validators.hpp"

namespace reach::cli {
namespace {

void run(const bench::EntmaxBenchConfig& o) {
  bench::validate(o);
  fmt::print(
      "alpha-entmax (alpha={}, ASEntmax scaling) vs softmax over window {} + Fibonacci "
      "offsets to n; {} heads, head_dim {}, float32, {} threads\n",
      o.alpha, o.window, o.heads, o.head_dim, omp_get_max_threads());
  fmt::print("{:>7}  {:>6}  {:>12}  {:>12}  {:>13}  {:>13}  {:>10}\n", "n", "keys/q", "entmax fwd",
             "entmax f+b", "softmax fwd", "softmax f+b", "peak MiB");
  bench::run_entmax_benchmark(o, [](const bench::EntmaxBenchRow& r) {
    fmt::print("{:>7}  {:>6}  {:>10.1f}ms  {:>10.1f}ms  {:>11.1f}ms  {:>11.1f}ms  {:>10.0f}\n",
               r.seq_len, r.keys_per_query, r.entmax_forward_ms, r.entmax_fwd_bwd_ms,
               r.softmax_forward_ms, r.softmax_fwd_bwd_ms, r.peak_mib);
  });
  fmt::print("peak MiB = resident memory above the inputs during one entmax forward+backward\n");
}

}  // namespace

void add_bench_entmax_command(CLI::App& app) {
  auto* group = app.get_subcommand("bench");
  auto o = std::make_shared<bench::EntmaxBenchConfig>();
  auto* cmd = group->add_subcommand("entmax",
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
