// Reports of `reach tasks`: answer accuracy versus length for one or more runs, as a
// Markdown table, JSON and a gnuplot PNG.
#pragma once

#include <string>
#include <vector>

#include "infer/budgeted_forward.hpp"
#include "train/task_trainer.hpp"

namespace reach::cli {

struct TaskRunResults {
  std::string label;  // e.g. "asentmax + nape (dense)"
  std::string dir;
  train::TaskRunConfig config;
  std::vector<train::LengthAccuracy> results;
  // Per result (same order; unmeasured for skipped lengths) under a --budget; empty: none.
  std::vector<infer::BudgetUsed> budgets;
};

// "normalizer + positions (attention)" of a run's model.
std::string task_run_label(const train::TaskRunConfig& config);

std::string task_markdown_table(const std::vector<TaskRunResults>& runs);

// Writes whichever paths are non-empty.
void write_task_reports(const std::vector<TaskRunResults>& runs, const std::string& json_path,
                        const std::string& markdown_path, const std::string& png_path);

}  // namespace reach::cli
