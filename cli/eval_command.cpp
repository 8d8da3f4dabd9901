// `reach eval CHECKPOINT --lengths 1x,2x,4x,8x [--json FILE] [--markdown FILE] [--png FILE]`.
#include <fmt/core.h>

#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/length_report.hpp"
#include "train/checkpoint.hpp"
#include "train/trainer.hpp"

namespace reach::cli {
namespace {

struct EvalOptions {
  std::string checkpoint;
  std::string lengths = "1x,2x,4x,8x";
  int64_t max_tokens = 32768;
  std::string json, markdown, png;
};

}  // namespace

void add_eval_command(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  auto* cmd = app.add_subcommand("eval", "Perplexity versus context length on held-out text");
  cmd->add_option("checkpoint", o->checkpoint, "Checkpoint directory (or a run's out_dir)")
      ->required();
  cmd->add_option("--lengths", o->lengths,
                  "Lengths: multiples of the training length (4x) or token counts (1024)");
  cmd->add_option("--max-tokens", o->max_tokens,
                  "Predicted tokens per length (same for all models)");
  cmd->add_option("--json", o->json, "Write results as JSON");
  cmd->add_option("--markdown", o->markdown, "Write a Markdown table");
  cmd->add_option("--png", o->png, "Plot perplexity vs length and loss vs position (gnuplot)");
  cmd->callback([o] {
    std::string dir = o->checkpoint;
    if (auto latest = train::latest_checkpoint(dir)) dir = *latest;
    auto ckpt = train::load_checkpoint(dir);
    const auto corpus = train::load_token_data(ckpt.config.corpus, dir, ckpt.config.cache_dir);
    const auto lengths = parse_lengths(o->lengths, ckpt.config.seq_len);
    ckpt.model->eval();
    const auto results =
        eval::evaluate_lengths([&](const torch::Tensor& x) { return ckpt.model(x); },
                               corpus.heldout, lengths, o->max_tokens);
    const std::string label = fmt::format("{} ({})", model::to_string(ckpt.config.model.attention),
                                          model::to_string(ckpt.config.model.schedule));
    std::vector<ModelLengths> table{{label, ckpt.config.seq_len, results}};
    fmt::print("{}", markdown_table(table));
    write_reports(table, o->json, o->markdown, o->png);
  });
}

}  // namespace reach::cli
