// `reach bench attention`: sparse dilated attention vs dense causal attention on the CPU or a
// CUDA GPU (bench/attention_latency).
#include <fmt/core.h>
#include <torch/torch.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "bench/attention_latency.hpp"
#include "cli/commands.hpp"
#include "cli/validators.hpp"

namespace reach::cli {
namespace {

struct BenchOptions {
  bench::AttentionBenchConfig config;
  bool json = false;
  std::string json_out;
  bool no_dense = false;
  bool no_learned = false;
  int threads = 0;
};

std::string ms_text(const bench::AttentionBenchRow& r, double ms) {
  return r.ran ? fmt::format("{:.1f}", ms) : "-";
}

void run_bench(BenchOptions o) {
  // LibTorch 1.13 may start with one intra-op thread; use every core unless told otherwise.
  torch::set_num_threads(o.threads > 0 ? o.threads
                                       : static_cast<int>(std::thread::hardware_concurrency()));
  o.config.dense = !o.no_dense;
  o.config.learned = !o.no_learned;
  auto progress = [&](const std::string& line) { fmt::print(stderr, "[bench] {}\n", line); };
  const auto rows = bench::run_attention_benchmark(o.config, progress);
  nlohmann::json out;
  {
    const auto& c = o.config;
    out["config"] = {{"batch", c.batch},
                     {"heads", c.heads},
                     {"head_dim", c.head_dim},
                     {"window", c.window},
                     {"reach", c.reach},
                     {"alpha", c.alpha},
                     {"base", c.base},
                     {"dtype", c.dtype},
                     {"device", c.device},
                     {"repeats", c.repeats},
                     {"threads", torch::get_num_threads()}};
    for (const auto& r : rows) {
      out["rows"].push_back({{"impl", r.impl},
                             {"seq_len", r.seq_len},
                             {"keys_per_query", r.keys_per_query},
                             {"ran", r.ran},
                             {"note", r.note},
                             {"forward_ms", r.forward_ms},
                             {"fwd_bwd_ms", r.fwd_bwd_ms},
                             {"peak_mib", r.peak_mib},
                             {"heads_per_chunk", r.heads_per_chunk}});
    }
  }
  if (!o.json_out.empty()) {
    std::ofstream file(o.json_out);
    if (!(file << out.dump(2) << "\n")) {
      throw std::runtime_error("cannot write JSON results to '" + o.json_out + "'");
    }
  }
  if (o.json) {
    fmt::print("{}\n", out.dump(2));
    return;
  }
  fmt::print(
      "attention on {}: batch {} heads {} head_dim {} {} W={} base={} alpha={} "
      "threads={}\n",
      o.config.device == "cuda" ? "CUDA (dense = scaled_dot_product_attention)" : "CPU",
      o.config.batch, o.config.heads, o.config.head_dim, o.config.dtype, o.config.window,
      o.config.base, o.config.alpha, torch::get_num_threads());
  fmt::print("{:>7}  {:>7}  {:>7}  {:>11}  {:>13}  {:>12}  {:>9}  {}\n", "n", "impl", "keys/q",
             "forward ms", "fwd+bwd ms", "speedup", "peak MiB", "note");
  for (const auto& r : rows) {
    std::string speed = "-";
    const auto dense = std::find_if(rows.begin(), rows.end(), [&](const auto& d) {
      return d.impl == "dense" && d.seq_len == r.seq_len;
    });
    if (r.impl != "dense" && dense != rows.end() && dense->ran) {
      speed = fmt::format("{:.1f}x/{:.1f}x", dense->forward_ms / r.forward_ms,
                          dense->fwd_bwd_ms / r.fwd_bwd_ms);
    }
    fmt::print("{:>7}  {:>7}  {:>7}  {:>11}  {:>13}  {:>12}  {:>9}  {}\n", r.seq_len, r.impl,
               r.keys_per_query, ms_text(r, r.forward_ms), ms_text(r, r.fwd_bwd_ms), speed,
               r.ran ? fmt::format("{:.0f}", r.peak_mib) : "-", r.note);
  }
  fmt::print(
      "speedup = dense time / this row's time (forward / forward+backward); peak MiB = "
      "{} above the inputs during forward+backward\n",
      o.config.device == "cuda" ? "GPU memory allocated by LibTorch" : "resident memory");
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto* group = app.add_subcommand("bench", "Benchmarks");
  group->require_subcommand(1);
  auto o = std::make_shared<BenchOptions>();
  auto* cmd = group->add_subcommand(
      "attention",
      "Time sparse dilated attention against dense causal attention (CPU, or a CUDA GPU with "
      "--device cuda)");
  cmd->add_option("--lengths", o->config.lengths, "Sequence lengths (comma separated)")
      ->delimiter(',')
      ->check(positive());
  cmd->add_option("--batch", o->config.batch, "Batch size")->check(positive());
  cmd->add_option("--heads", o->config.heads, "Attention heads")->check(positive());
  cmd->add_option("--head-dim", o->config.head_dim, "Head dimension")->check(positive());
  cmd->add_option("--window", o->config.window, "Local window W")->check(positive());
  cmd->add_option("--reach", o->config.reach, "Maximum offset R (default: n)")->check(positive());
  cmd->add_option("--alpha", o->config.alpha, "Dilation scale alpha")->check(positive());
  cmd->add_option("--base", o->config.base, "Offset base")
      ->check(CLI::IsMember({"fibonacci", "power_of_two"}));
  cmd->add_option("--dtype", o->config.dtype, "float32, float64, or bfloat16 (cuda only)")
      ->check(CLI::IsMember({"float32", "float64", "bfloat16"}));
  cmd->add_option("--device", o->config.device,
                  "cpu, or cuda (reach's CUDA kernels against fused SDPA; needs a CUDA LibTorch)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--repeats", o->config.repeats, "Timed repetitions (median reported)")
      ->check(positive());
  cmd->add_option("--dense-memory-gib", o->config.dense_memory_gib,
                  "Memory budget for the dense baseline (run head-chunked to fit; else skipped)")
      ->check(positive());
  cmd->add_flag("--no-dense", o->no_dense, "Skip the dense baseline");
  cmd->add_flag("--no-learned", o->no_learned,
                "Skip the learned schedule (fractional offsets) rows");
  cmd->add_option("--threads", o->threads, "Threads (default: all cores)")->check(positive());
  cmd->add_flag("--json", o->json, "Print results as JSON instead of the table");
  cmd->add_option("--json-out", o->json_out, "Also write the results as JSON to this file");
  cmd->callback([o] { run_bench(*o); });
}

}  // namespace reach::cli
