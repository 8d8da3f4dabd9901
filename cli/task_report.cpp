#include "cli/task_report.hpp"

#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "cli/gnuplot.hpp"
#include "cli/length_report.hpp"
#include "cli/model_label.hpp"

namespace reach::cli {

std::string task_run_label(const train::TaskRunConfig& c) {
  return fmt::format("{} + {} ({})", model::to_string(c.model.normalizer),
                     model::to_string(c.model.positions), attention_label(c.model));
}

std::string task_markdown_table(const std::vector<TaskRunResults>& runs) {
  if (runs.empty()) return {};
  // Columns: every multiplier any run has, in order of first appearance.
  std::vector<int64_t> multipliers;
  for (const auto& run : runs) {
    for (const auto& r : run.results) {
      if (std::find(multipliers.begin(), multipliers.end(), r.multiplier) == multipliers.end()) {
        multipliers.push_back(r.multiplier);
      }
    }
  }
  bool budgets = false;
  for (const auto& run : runs) budgets = budgets || !run.budgets.empty();
  std::string out =
      budgets ? "| model | task | trained at | budget |" : "| model | task | trained at |";
  std::string rule = budgets ? "|---|---|---:|---|" : "|---|---|---:|";
  for (int64_t m : multipliers) {
    out += fmt::format(" {}x |", m);
    rule += "---:|";
  }
  out += "\n" + rule + "\n";
  for (const auto& run : runs) {
    const auto& c = run.config;
    out += fmt::format("| {} | {} | {} |", run.label, c.task,
                       c.train_min_length > 0
                           ? fmt::format("{}..{}", c.train_min_length, c.train_length)
                           : std::to_string(c.train_length));
    if (budgets) out += fmt::format(" {} |", run.budgets.empty() ? "full" : run.budgets[0].rule);
    for (int64_t m : multipliers) {
      auto it = std::find_if(run.results.begin(), run.results.end(),
                             [&](const auto& r) { return r.multiplier == m; });
      if (it == run.results.end() || !it->skipped.empty()) {
        out += " — |";
      } else {
        const auto index = static_cast<size_t>(it - run.results.begin());
        const bool keys = index < run.budgets.size() && run.budgets[index].measured;
        out += fmt::format(
            " {:.1f}%{} |", 100.0 * it->accuracy,
            keys ? fmt::format(" ({:.1f} keys)", run.budgets[index].keys_per_query) : "");
      }
    }
    out += "\n";
  }
  return out;
}

void write_task_reports(const std::vector<TaskRunResults>& runs, const std::string& json_path,
                        const std::string& markdown_path, const std::string& png_path) {
  if (!json_path.empty()) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& run : runs) {
      nlohmann::json results = nlohmann::json::array();
      for (size_t i = 0; i < run.results.size(); ++i) {
        const auto& r = run.results[i];
        nlohmann::json e{{"multiplier", r.multiplier},
                         {"length", r.length},
                         {"examples", r.examples},
                         {"accuracy", r.accuracy},
                         {"token_accuracy", r.token_accuracy},
                         {"seconds", r.seconds}};
        if (!r.skipped.empty()) e["skipped"] = r.skipped;
        if (r.peak_gpu_mib >= 0) e["peak_gpu_mib"] = r.peak_gpu_mib;
        if (r.skipped.empty() && i < run.budgets.size()) e["budget"] = budget_json(run.budgets[i]);
        results.push_back(e);
      }
      const auto& m = run.config.model;
      j.push_back({{"label", run.label},
                   {"run", run.dir},
                   {"task", run.config.task},
                   {"train_length", run.config.train_length},
                   {"train_min_length", run.config.train_min_length},
                   {"train_steps", run.config.steps},
                   {"model",
                    {{"attention", model::to_string(m.attention)},
                     {"normalizer", model::to_string(m.normalizer)},
                     {"positions", model::to_string(m.positions)},
                     {"entmax_alpha", m.entmax_alpha},
                     {"entmax_scale", model::to_string(m.entmax_scale)},
                     {"layers", m.layers},
                     {"d_model", m.d_model},
                     {"heads", m.heads}}},
                   {"results", results}});
    }
    write_text_file(json_path, j.dump(2) + "\n");
  }
  if (!markdown_path.empty()) {
    write_text_file(markdown_path, task_markdown_table(runs));
  }
  if (png_path.empty()) return;
  const PlotDataDir plot_dir("task-plot");
  const auto& dir = plot_dir.path();
  std::string plots;
  for (size_t i = 0; i < runs.size(); ++i) {
    const auto file = dir / fmt::format("run{}.dat", i);
    std::ofstream data(file);
    for (const auto& r : runs[i].results) {
      if (r.skipped.empty()) data << r.multiplier << " " << 100.0 * r.accuracy << "\n";
    }
    plots += fmt::format("{}'{}' using 1:2 with linespoints lw 2 title '{}'", i ? ", " : "",
                         file.string(), runs[i].label);
  }
  const std::string script = fmt::format(
      "set terminal png size 900,500 noenhanced\nset output '{}'\n"
      "set title 'answer accuracy vs length ({} trained at {})'\n"
      "set xlabel 'length / training length'\nset ylabel 'accuracy (%)'\n"
      "set logscale x 2\nset yrange [0:105]\nset grid\nset key bottom left\nplot {}\n",
      png_path, runs.empty() ? "" : runs[0].config.task,
      runs.empty() ? 0 : runs[0].config.train_length, plots);
  run_gnuplot(script, png_path);
}

}  // namespace reach::cli
