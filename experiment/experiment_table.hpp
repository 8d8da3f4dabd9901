// The matrix's table: per run, perplexity at each evaluated length (mean over seeds, with the
// spread when there are several), the change from the shortest length to the longest, and the
// reference figures beside them. Markdown for reading, CSV (one row per run, seed and length)
// and JSON for tools.
#pragma once

#include <string>

#include "experiment/experiment_runner.hpp"

namespace reach::experiment {

std::string markdown_table(const ExperimentSpec& spec, const ExperimentResult& result);
std::string csv_table(const ExperimentSpec& spec, const ExperimentResult& result);
std::string json_table(const ExperimentSpec& spec, const ExperimentResult& result);

}  // namespace reach::experiment
