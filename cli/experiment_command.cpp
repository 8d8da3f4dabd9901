// `reach experiment MATRIX.toml`: trains a matrix of runs one after another, evaluates each at
// the matrix's lengths, and writes one table (Markdown, CSV, JSON) and a plot. Rerunning it
// skips finished runs and resumes a killed one; Ctrl-C checkpoints the current run and stops.
#include <fmt/core.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include "cli/commands.hpp"
#include "cli/length_report.hpp"
#include "experiment/experiment_runner.hpp"
#include "experiment/experiment_table.hpp"

namespace reach::cli {
namespace fs = std::filesystem;
namespace {

struct ExperimentOptions {
  std::string matrix;
  std::vector<std::string> overrides;
  std::vector<std::string> only;
  std::vector<uint64_t> seeds;
  bool dry_run = false;
  bool table_only = false;
  bool quiet = false;
  bool no_png = false;
};

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

void run_experiment_command(const ExperimentOptions& o) {
  const auto spec =
      experiment::select_runs(experiment::load_experiment(o.matrix, o.overrides), o.only, o.seeds);
  fmt::print(stderr, "[experiment] {}: {} runs, lengths", spec.name, spec.runs.size());
  for (const int64_t m : spec.multipliers) fmt::print(stderr, " {}x", m);
  fmt::print(stderr, ", results in {}\n", spec.out_dir);
  const auto result = experiment::run_experiment(
      spec,
      {.quiet = o.quiet, .dry_run = o.dry_run || o.table_only, .log = [](const std::string& line) {
         fmt::print(stderr, "[experiment] {}\n", line);
       }});
  if (o.dry_run && !o.table_only) return;
  fs::create_directories(spec.out_dir);
  const fs::path out(spec.out_dir);
  const auto markdown = experiment::markdown_table(spec, result);
  write_text(out / "results.md", markdown);
  write_text(out / "results.csv", experiment::csv_table(spec, result));
  write_text(out / "results.json", experiment::json_table(spec, result));
  fmt::print("{}", markdown);
  std::string png;
  if (!o.no_png && !result.interrupted) {
    // One curve per run: its first seed (the table has the means).
    std::vector<ModelLengths> curves;
    for (const auto& run : result.runs) {
      if (run.seeds.empty()) continue;
      curves.push_back(
          {run.run.name, run.seeds.front().seq_len, run.seeds.front().lengths, "", "", {}});
    }
    png = (out / "perplexity_vs_length.png").string();
    write_reports(curves, "", "", png);
  }
  fmt::print("results: {}/results.{{md,csv,json}}{}\n", spec.out_dir,
             png.empty() ? "" : ", plot: " + png);
  if (result.interrupted) throw std::runtime_error("interrupted; rerun the same command to resume");
}

}  // namespace

void add_experiment_command(CLI::App& app) {
  auto o = std::make_shared<ExperimentOptions>();
  auto* cmd = app.add_subcommand(
      "experiment",
      "Train a matrix of runs (configs x overrides x seeds) one after another, evaluate each at "
      "multiples of its training length, write one table and plot; rerunning skips finished runs "
      "and resumes a killed one (format: experiment/experiment_spec.hpp, example: "
      "configs/experiments/)");
  cmd->add_option("matrix", o->matrix, "The matrix file (TOML)")->required();
  cmd->add_option("--set", o->overrides,
                  "Config override for every run (after the matrix's own), e.g. train.steps=100");
  cmd->add_option("--only", o->only,
                  "Run and tabulate only these runs of the matrix (names, comma separated); "
                  "a later run of the whole matrix skips what they finished")
      ->delimiter(',');
  cmd->add_option("--seeds", o->seeds,
                  "Seeds for every run, replacing the matrix's (comma separated), e.g. 42")
      ->delimiter(',');
  cmd->add_flag("--dry-run", o->dry_run, "Say which runs are finished, resumable or to train");
  cmd->add_flag("--table-only", o->table_only,
                "Write the table (and plot) of the runs finished so far; train nothing");
  cmd->add_flag("--quiet", o->quiet, "No training progress lines");
  cmd->add_flag("--no-png", o->no_png, "Do not draw the plot (needs gnuplot)");
  cmd->callback([o] { run_experiment_command(*o); });
}

}  // namespace reach::cli
