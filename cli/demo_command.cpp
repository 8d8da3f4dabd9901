// `reach demo`: the headline experiment at small scale. Trains a dense and a staggered-
// Fibonacci tiny model under one recipe on the default corpus, evaluates both at 1x..8x the
// training length, prints the table and writes a plot.
#include <fmt/core.h>

#include <memory>

#include "cli/commands.hpp"
#include "cli/length_report.hpp"
#include "train/checkpoint.hpp"
#include "train/trainer.hpp"

namespace reach::cli {
namespace {

struct DemoOptions {
  std::string out_dir = "runs/demo";
  int64_t steps = 500;
  int64_t seq_len = 128;
  int64_t max_tokens = 16384;
  std::vector<std::string> overrides;
};

void run_demo(const DemoOptions& o) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> variants{
      {"dense", {"model.attention=dense"}},
      {"fibonacci-stagger", {"model.attention=fibonacci", "model.schedule=stagger"}},
  };
  std::vector<ModelLengths> table;
  for (const auto& [name, settings] : variants) {
    std::vector<std::string> overrides{
        "run.out_dir=" + o.out_dir + "/" + name, fmt::format("train.steps={}", o.steps),
        fmt::format("data.seq_len={}", o.seq_len), fmt::format("train.eval_every={}", o.steps),
        fmt::format("train.checkpoint_every={}", o.steps)};
    overrides.insert(overrides.end(), settings.begin(), settings.end());
    overrides.insert(overrides.end(), o.overrides.begin(), o.overrides.end());
    const auto config = train::parse_train_config("", overrides);
    fmt::print(stderr, "[demo] training {} ({} steps of {} x {} tokens)\n", name, config.steps,
               config.batch, config.seq_len);
    // The demo owns its run directories: each run starts them over.
    const auto result = train::run_training(config, {.overwrite = true});
    if (result.interrupted) throw std::runtime_error("demo interrupted");
    auto ckpt = train::load_checkpoint(result.checkpoint);
    ckpt.model->eval();
    const auto corpus = train::load_token_data(
        config.corpus, data::split_options(config.heldout_fraction, config.heldout_files),
        result.checkpoint, config.cache_dir);
    fmt::print(stderr, "[demo] evaluating {} at 1x, 2x, 4x, 8x\n", name);
    table.push_back({name,
                     config.seq_len,
                     eval::evaluate_lengths(
                         [&](const torch::Tensor& x) { return ckpt.model(x); }, corpus.heldout,
                         parse_lengths("1x,2x,4x,8x", config.seq_len), o.max_tokens),
                     result.checkpoint,
                     "held-out part of " + config.corpus,
                     {}});
  }
  fmt::print("{}", markdown_table(table));
  const std::string png = o.out_dir + "/perplexity_vs_length.png";
  write_reports(table, o.out_dir + "/results.json", o.out_dir + "/results.md", png);
  fmt::print("\nperplexity relative to 1x:\n");
  for (const auto& m : table) {
    fmt::print("  {:<18}", m.label);
    for (const auto& r : m.results) {
      fmt::print(" {:>4.0f}x: {:+6.1f}%", static_cast<double>(r.length) / m.train_length,
                 100.0 * (r.perplexity / m.results.front().perplexity - 1.0));
    }
    fmt::print("\n");
  }
  fmt::print("plot: {}\nresults: {}/results.md, {}/results.json\n", png, o.out_dir, o.out_dir);
}

}  // namespace

void add_demo_command(CLI::App& app) {
  auto o = std::make_shared<DemoOptions>();
  auto* cmd = app.add_subcommand(
      "demo", "Train dense and Fibonacci-stagger tiny models, compare perplexity at 1x..8x length");
  cmd->add_option("--out-dir", o->out_dir, "Where runs, results and the plot go");
  cmd->add_option("--steps", o->steps, "Training steps per model")->check(CLI::Range(1, 1000000));
  cmd->add_option("--seq-len", o->seq_len, "Training length")->check(CLI::Range(8, 65536));
  cmd->add_option("--max-tokens", o->max_tokens, "Evaluated tokens per length");
  cmd->add_option("--set", o->overrides, "Extra config overrides for both models");
  cmd->callback([o] { run_demo(*o); });
}

}  // namespace reach::cli
