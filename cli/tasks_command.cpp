// `reach tasks train` and `reach tasks eval`: synthetic length-generalisation tasks
// (max retrieval, multi-query associative recall, passkey) trained at a short length and
// evaluated at many times that length.
#include <fmt/core.h>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>

#include "cli/commands.hpp"
#include "cli/config_file_option.hpp"
#include "cli/eval_device.hpp"
#include "cli/gnuplot.hpp"
#include "cli/task_report.hpp"
#include "cli/validators.hpp"
#include "infer/budgeted_forward.hpp"
#include "train/task_config.hpp"
#include "train/task_trainer.hpp"

namespace reach::cli {
namespace {

struct TasksTrainOptions {
  std::string config;
  std::vector<std::string> overrides;
  std::string out;
  bool no_eval = false;
  bool quiet = false;
  bool resume = false;
  bool overwrite = false;
};

struct TasksEvalOptions {
  std::vector<std::string> runs;
  std::string multipliers;
  int64_t examples = 0;
  int64_t max_length = 0;
  std::string device = "auto";
  std::string json, markdown, png;
  std::string budget;  // empty: the plain forward
};

void print_progress(const std::string& label, const train::LengthAccuracy& r) {
  if (!r.skipped.empty()) {
    fmt::print(stderr, "[tasks] {}: {}x ({} tokens) skipped: {}\n", label, r.multiplier, r.length,
               r.skipped);
  } else {
    fmt::print(
        stderr,
        "[tasks] {}: {}x ({} tokens) accuracy {:.1f}% ({:.1f}% of answer tokens) on {} "
        "examples ({:.1f}s{})\n",
        label, r.multiplier, r.length, 100.0 * r.accuracy, 100.0 * r.token_accuracy, r.examples,
        r.seconds,
        r.peak_gpu_mib >= 0 ? fmt::format(", peak GPU memory {:.1f} MiB", r.peak_gpu_mib) : "");
  }
}

TaskRunResults evaluate_run(const std::string& dir, model::Gpt& model,
                            const train::TaskRunConfig& config, bool quiet,
                            const std::optional<infer::BudgetRule>& budget = std::nullopt) {
  TaskRunResults run{task_run_label(config), dir, config, {}, {}};
  // Under a budget: a mass budget counts the keys read over every batch; any other is the
  // fused forward, counted on one example per length (on the CPU).
  std::map<int64_t, model::attention::BudgetUsage> counted;
  std::map<int64_t, infer::BudgetUsed> measured;
  train::TaskLogits logits;
  if (budget) {
    logits = [&](const torch::Tensor& tokens) {
      const int64_t length = tokens.size(1);
      if (budget->mass) return infer::budgeted_logits(model, tokens, *budget, &counted[length]);
      if (!measured.contains(length)) {
        measured[length] = infer::measure_budget(model, tokens[0], *budget);
      }
      return infer::budgeted_logits(model, tokens, *budget);
    };
  }
  // Long lengths take minutes on a CPU: say how far each is once it has run a while.
  auto batches = [&](int64_t length, int64_t done, int64_t total, double seconds) {
    if (!quiet && seconds > 10 && done < total) {
      fmt::print(stderr, "[tasks] {}: {} tokens, {}/{} examples ({:.0f}s, ETA {:.0f}s)\n",
                 run.label, length, done, total, seconds,
                 seconds / static_cast<double>(done) * static_cast<double>(total - done));
    }
  };
  run.results = train::evaluate_task_model(
      model, config, train::parse_multipliers(config.multipliers),
      [&](const train::LengthAccuracy& r) {
        if (!quiet) print_progress(run.label, r);
      },
      batches, logits);
  if (budget) {
    for (const auto& r : run.results) {
      infer::BudgetUsed used{budget->text, r.length, budget->at(r.length), 0, false};
      if (budget->mass && counted.contains(r.length)) {
        used.keys_per_query = infer::keys_per_query(counted[r.length]);
        used.measured = true;
      } else if (measured.contains(r.length)) {
        used = measured[r.length];
      }
      run.budgets.push_back(used);
    }
  }
  return run;
}

}  // namespace

void add_tasks_command(CLI::App& app) {
  auto* tasks = app.add_subcommand(
      "tasks",
      "Synthetic length-generalisation tasks: train at a short length, measure accuracy far "
      "beyond it");
  tasks->require_subcommand(1);

  auto t = std::make_shared<TasksTrainOptions>();
  auto* train_cmd = tasks->add_subcommand(
      "train",
      "Train a model on a task (config [task], [model], [train], [eval] sections), then "
      "evaluate it at eval.multipliers x train.length; writes the run directory with "
      "config.toml, model.safetensors, metrics.jsonl and accuracy.{json,md,png}");
  add_config_file_options(train_cmd, t->config,
                          "TOML config ([run] [task] [model] [train] [eval] sections; see "
                          "configs/tasks/); defaults when omitted");
  train_cmd->add_option("--set", t->overrides,
                        "Override a config key, e.g. --set model.normalizer=asentmax "
                        "(repeatable)");
  train_cmd->add_option("--out", t->out, "Run directory (overrides run.out_dir)");
  train_cmd->add_flag("--no-eval", t->no_eval, "Train only");
  train_cmd->add_flag("--quiet", t->quiet, "No progress lines (training or evaluation)");
  auto* resume = train_cmd->add_flag(
      "--resume", t->resume,
      "Continue from the newest valid checkpoint of the run directory (exactly); an error "
      "when there is none");
  train_cmd
      ->add_flag("--overwrite", t->overwrite,
                 "The run directory holds a run: delete it and start over (without this or "
                 "--resume, such a directory is refused)")
      ->excludes(resume);
  train_cmd->footer(
      "\nEvery config key with its default (set them in the file or with --set; "
      "model.vocab_size is the task's):\n\n" +
      train::task_config_help() + [] {
        std::string keys;
        for (const char* key : train::kTaskResumeMutableKeys) keys += std::string("\n  ") + key;
        return "\nOn --resume these keys may differ from the checkpoint's; any other must "
               "match it, or the resume is refused:" +
               keys + "\n";
      }());
  train_cmd->callback([t] {
    auto overrides = t->overrides;
    if (!t->out.empty()) overrides.push_back("run.out_dir=\"" + t->out + "\"");
    const auto config = t->config.empty() ? train::parse_task_config("", overrides)
                                          : train::load_task_config(t->config, overrides);
    model::Gpt model{nullptr};
    const auto result = train::train_task_model(
        config, {.resume = t->resume, .overwrite = t->overwrite, .quiet = t->quiet}, &model);
    if (!t->quiet || result.interrupted) {
      fmt::print(stderr,
                 "[tasks] trained {} steps in {:.0f}s: loss {:.4f}, batch accuracy {:.3f}{}\n",
                 result.steps, result.seconds, result.final_loss, result.final_batch_accuracy,
                 result.interrupted ? " (interrupted; weights and a checkpoint saved)" : "");
    }
    if (result.interrupted) std::exit(130);
    if (t->no_eval) return;
    std::vector<TaskRunResults> runs{evaluate_run(config.out_dir, model, config, t->quiet)};
    const std::filesystem::path dir(config.out_dir);
    std::string png = (dir / "accuracy.png").string();
    if (!gnuplot_available()) {
      fmt::print(stderr,
                 "[tasks] no gnuplot on PATH: accuracy.png not drawn (install "
                 "gnuplot-nox; the JSON and Markdown reports are written)\n");
      png.clear();
    }
    write_task_reports(runs, (dir / "accuracy.json").string(), (dir / "accuracy.md").string(), png);
    fmt::print("{}", task_markdown_table(runs));
  });

  auto e = std::make_shared<TasksEvalOptions>();
  auto* eval_cmd = tasks->add_subcommand(
      "eval",
      "Evaluate one or more trained task runs at multiples of their training length and "
      "write one combined table and plot");
  eval_cmd->add_option("runs", e->runs, "Run directories from `reach tasks train`")->required();
  eval_cmd->add_option("--multipliers", e->multipliers,
                       "Lengths as multiples of train.length, e.g. 1,4,16,64,256 (default: "
                       "each run's eval.multipliers)");
  eval_cmd->add_option("--examples", e->examples, "Examples per length (default: the run's)")
      ->check(positive());
  eval_cmd
      ->add_option("--max-length", e->max_length,
                   "Skip lengths above this many tokens (default: the run's)")
      ->check(positive());
  eval_cmd
      ->add_option("--device", e->device,
                   "auto (a CUDA GPU when there is one), cpu, cuda or cuda:N; fp32 on every "
                   "device")
      ->capture_default_str();
  eval_cmd->add_option("--budget", e->budget,
                       "Evaluate under a per-request attention budget over the same weights: "
                       "full | window=W,rungs=K | rungs=2*log2(n) | mass=0.9 | chunks=K | "
                       "chunks=sqrt(c) | chunk_mass=0.9 (rules of n take n = each length; mass "
                       "and chunk_mass run on the CPU); the table and JSON report the keys "
                       "read per query (docs/inference.md)");
  eval_cmd->add_option("--json", e->json, "Write results as JSON");
  eval_cmd->add_option("--markdown", e->markdown, "Write a Markdown table");
  eval_cmd->add_option("--png", e->png, "Plot accuracy vs length (gnuplot)");
  eval_cmd->callback([e] {
    check_output_path(e->json, "--json");
    check_output_path(e->markdown, "--markdown");
    check_output_path(e->png, "--png");
    const EvalDevice where = resolve_eval_device(e->device, "fp32");
    std::optional<infer::BudgetRule> budget;
    if (!e->budget.empty()) {
      try {
        budget = infer::parse_budget_rule(e->budget);
      } catch (const std::invalid_argument& error) {
        throw std::invalid_argument(std::string("--budget: ") + error.what());
      }
    }
    std::vector<std::string> overrides;
    if (!e->multipliers.empty()) overrides.push_back("eval.multipliers=\"" + e->multipliers + "\"");
    if (e->examples > 0) overrides.push_back(fmt::format("eval.examples={}", e->examples));
    if (e->max_length > 0) overrides.push_back(fmt::format("eval.max_length={}", e->max_length));
    std::vector<TaskRunResults> runs;
    for (const auto& dir : e->runs) {
      auto run = train::load_task_run(dir);
      // Re-parse with the overrides so they are validated like any config key.
      auto config = train::parse_task_config(train::to_toml(run.config), overrides);
      fmt::print(stderr, "[tasks] evaluating {} ({}) on {}\n", dir, task_run_label(config),
                 where.describe());
      prepare_for_eval(*run.model, where, "task run '" + dir + "'");
      runs.push_back(evaluate_run(dir, run.model, config, false, budget));
    }
    fmt::print("{}", task_markdown_table(runs));
    write_task_reports(runs, e->json, e->markdown, e->png);
  });
}

}  // namespace reach::cli
