// A matrix of training runs (`reach experiment MATRIX.toml`): which configs to train, with
// which overrides and seeds, how to evaluate them, and the reference figures to print beside
// them. The file format (every key is checked; an unknown one is an error naming it):
//
//   [experiment]
//   name = "paper-matrix"
//   out_dir = "runs/paper-matrix"   # one directory per run and seed below it
//   config = "../paper.toml"         # default config of every run (relative to this file)
//   set = ["train.steps=13000"]      # overrides shared by every run
//   seeds = [42]                     # default seeds of every run
//   multipliers = [1, 2, 4]          # evaluated lengths, in multiples of data.seq_len
//   max_tokens = 1048576             # predicted tokens per length (same for every run)
//   reference = "paper"              # the name of the reference column
//
//   [[run]]
//   name = "dense"                   # [A-Za-z0-9._-]+, unique
//   config = "..."                   # optional: replaces [experiment].config
//   set = ["model.attention=dense"]  # after the shared overrides
//   seeds = [42, 43]                 # optional: replaces [experiment].seeds
//   reference = [33.37, 49.15, 100.36]  # optional: one figure per multiplier (0 = none)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace reach::experiment {

struct ExperimentRun {
  std::string name;
  std::string config_path;             // resolved; empty: the defaults
  std::vector<std::string> overrides;  // the shared ones, then the run's own
  std::vector<uint64_t> seeds;
  std::vector<double> reference;  // per multiplier; empty or 0: none
};

struct ExperimentSpec {
  std::string name = "experiment";
  std::string out_dir = "runs/experiment";
  std::vector<int64_t> multipliers{1, 2, 4};
  int64_t max_tokens = 262144;
  std::string reference_name = "reference";
  std::vector<ExperimentRun> runs;
};

// Parses a matrix; relative config paths are taken from base_dir. `extra_overrides`
// (`reach experiment --set`) come after every run's own. Throws std::invalid_argument naming
// the key and the run.
ExperimentSpec parse_experiment(const std::string& toml_text, const std::string& base_dir,
                                const std::vector<std::string>& extra_overrides = {});
ExperimentSpec load_experiment(const std::string& path,
                               const std::vector<std::string>& extra_overrides = {});

// `reach experiment --only NAMES --seeds LIST`: keeps the named runs (in the matrix's order)
// and, when `seeds` is not empty, replaces every kept run's seeds with it; empty `names` keeps
// every run. So one matrix can be run in parts (the results of each part land in the same
// directories, and a later run of the whole matrix skips them). Throws std::invalid_argument
// naming an unknown or repeated run (and listing the matrix's runs).
ExperimentSpec select_runs(const ExperimentSpec& spec, const std::vector<std::string>& names,
                           const std::vector<uint64_t>& seeds);

// The directory of one run and seed: <out_dir>/<run>-seed<seed>.
std::string run_directory(const ExperimentSpec& spec, const ExperimentRun& run, uint64_t seed);

}  // namespace reach::experiment
