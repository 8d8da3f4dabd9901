// `reach eval CHECKPOINT... [--text FILE | --corpus NAME] [--lengths 1x,2x,4x,8x]
//  [--max-tokens N] [--budget RULE] [--device auto|cpu|cuda] [--json FILE] [--markdown FILE]
//  [--png FILE]`.
#include <fmt/core.h>

#include <cmath>
#include <map>
#include <memory>
#include <optional>

#include "cli/budget_eval.hpp"
#include "cli/checkpoint_choice.hpp"
#include "cli/commands.hpp"
#include "cli/eval_device.hpp"
#include "cli/eval_text.hpp"
#include "cli/gnuplot.hpp"
#include "cli/length_report.hpp"
#include "cli/model_label.hpp"
#include "cli/validators.hpp"
#include "train/checkpoint.hpp"
#include "train/device.hpp"
#include "train/trainer.hpp"

namespace reach::cli {
namespace {

struct EvalOptions {
  std::vector<std::string> checkpoints;
  std::string text, corpus;
  std::string lengths = "1x,2x,4x,8x";
  int64_t max_tokens = 32768;
  std::string device = "auto", precision = "fp32";
  std::string json, markdown, png;
  std::string budget;   // empty: the trained key set, the plain forward
  bool freeze = false;  // learned schedules: integer offsets, as inference uses them
};

void run_eval(const EvalOptions& o) {
  check_output_path(o.json, "--json");
  check_output_path(o.markdown, "--markdown");
  check_output_path(o.png, "--png");
  const EvalDevice where = resolve_eval_device(o.device, o.precision);
  std::optional<infer::BudgetRule> budget;
  if (!o.budget.empty()) {
    try {
      budget = infer::parse_budget_rule(o.budget);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string("--budget: ") + e.what());
    }
  }
  std::vector<ModelLengths> table;
  std::map<std::string, int> label_uses;
  for (const auto& given : o.checkpoints) {
    auto chosen = load_chosen_checkpoint(given, "eval");
    const std::string dir = chosen.dir;
    auto ckpt = std::move(chosen.checkpoint);
    const auto lengths = parse_lengths(o.lengths, ckpt.config.seq_len);
    const auto text = eval_text(o.text, o.corpus, ckpt, dir);
    eval::require_heldout_length(
        text.documents, lengths,
        "checkpoint '" + dir + "', text: " + text.description + ": " + text.remedy);
    const auto tokenizer = data::load_tokenizer(dir);
    std::string label = model_label(ckpt.config.model);
    if (o.freeze && ckpt.config.model.schedule == model::AlphaSchedule::learned) {
      label += " (frozen)";
    }
    if (++label_uses[label] > 1) label += fmt::format(" #{}", label_uses[label]);
    fmt::print(stderr,
               "[eval] {}: checkpoint {} (step {}, trained at {} tokens, {} tokenizer); text: {}; "
               "device: {}\n",
               label, dir, ckpt.step, ckpt.config.seq_len, tokenizer->kind(), text.description,
               where.describe());
    prepare_for_eval(*ckpt.model, where, "checkpoint '" + dir + "'");
    if (o.freeze) ckpt.model->freeze_schedules();
    std::vector<eval::LengthResult> results;
    std::vector<infer::BudgetUsed> budgets;
    if (budget) {
      auto scored = evaluate_budgeted_lengths(ckpt.model, where, text.documents, lengths,
                                              o.max_tokens, tokenizer->token_bytes(), *budget);
      results = std::move(scored.results);
      budgets = std::move(scored.budgets);
    } else {
      results = eval::evaluate_lengths(
          [&](const torch::Tensor& x) {
            const train::Bf16Autocast autocast(where.bf16);
            return ckpt.model(x.to(where.device));
          },
          text.documents, lengths, o.max_tokens, 8192, tokenizer->token_bytes());
    }
    for (const auto& r : results) {
      if (!std::isfinite(r.mean_nll)) {
        throw std::runtime_error(fmt::format(
            "checkpoint '{}': the loss at length {} is not finite ({}); its outputs overflow", dir,
            r.length, r.mean_nll));
      }
    }
    table.push_back({label, ckpt.config.seq_len, results, dir, text.description, budgets});
  }
  fmt::print("{}", markdown_table(table));
  write_reports(table, o.json, o.markdown, o.png);
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  auto* cmd = app.add_subcommand(
      "eval",
      "Perplexity versus context length: per token (NLL in nats, perplexity) and bits per byte "
      "(comparable across tokenizers), one table for every checkpoint given");
  cmd->add_option("checkpoint", o->checkpoints,
                  "Checkpoint directories, or runs' out_dirs (their newest checkpoint); the one "
                  "evaluated is always printed")
      ->required();
  auto* text = cmd->add_option("--text", o->text,
                               "Score all of this text file (or every file in this folder) "
                               "instead of the checkpoint's held-out text");
  cmd->add_option("--corpus", o->corpus,
                  "Score the held-out part of this corpus (kjv, linux, or a path; split as in "
                  "docs/data.md) instead of the checkpoint's own")
      ->excludes(text);
  cmd->add_option("--lengths", o->lengths,
                  "Lengths: multiples of the training length (4x, 1.5x) or token counts (1024)")
      ->capture_default_str();
  cmd->add_option("--max-tokens", o->max_tokens,
                  "Predicted tokens per length, the same for every model")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--device", o->device, "auto (a CUDA GPU when there is one), cpu, cuda or cuda:N")
      ->capture_default_str();
  cmd->add_option("--precision", o->precision,
                  "fp32, or bf16 (CUDA only: bf16 autocast, faster, ~1e-2 relative from fp32)")
      ->capture_default_str();
  cmd->add_option("--budget", o->budget,
                  "Score under a per-request attention budget over the same weights: full | "
                  "window=W,rungs=K | rungs=2*log2(n) | window=0.05*n | mass=0.9 | chunks=K | "
                  "chunks=sqrt(c) | chunk_mass=0.9 (rules of n take n = each length; mass and "
                  "chunk_mass run on the CPU). The table and JSON report the "
                  "budget at each length and the keys read per query (docs/inference.md)");
  cmd->add_flag("--freeze-schedules", o->freeze,
                "Learned schedules: score with their offsets frozen to integers round(alpha * b), "
                "as `reach generate` decodes them (no effect on static schedules)");
  cmd->add_option("--json", o->json, "Write results as JSON");
  cmd->add_option("--markdown", o->markdown, "Write a Markdown table");
  cmd->add_option("--png", o->png, "Plot perplexity vs length and loss vs position (gnuplot)");
  cmd->callback([o] { run_eval(*o); });
}

}  // namespace reach::cli
