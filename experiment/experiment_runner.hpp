// Runs an experiment matrix one run after another on one device: each (run, seed) trains into
// its own directory, is evaluated at the matrix's lengths, and leaves a result.json written
// last (atomically). So a rerun skips what finished, resumes a killed run from its newest
// checkpoint, and starts afresh only runs that never wrote one.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "eval/perplexity.hpp"
#include "experiment/experiment_spec.hpp"
#include "train/train_config.hpp"

namespace reach::experiment {

struct SeedResult {
  uint64_t seed = 0;
  std::string directory;
  std::string checkpoint;  // the checkpoint evaluated
  int64_t seq_len = 0;
  int64_t steps = 0;
  int64_t tokens_trained = 0;
  int64_t parameters = 0;
  double train_seconds = 0;  // this process's training time (0 when skipped as finished)
  // Inference speed on the training device: forward tokens/s at batch x seq_len (its
  // training precision, no gradients; median of timed passes); a learned schedule is also
  // timed frozen to integer offsets (0: not learned, or a result from before this field).
  double inference_tokens_per_s = 0;
  double frozen_inference_tokens_per_s = 0;
  std::string device;                       // where it was evaluated and timed ("cuda:0", "cpu")
  std::vector<eval::LengthResult> lengths;  // one per multiplier
};

struct RunResult {
  ExperimentRun run;
  std::vector<SeedResult> seeds;  // those finished
};

// What a run and seed is at the moment.
enum class RunState { finished, resumable, fresh };

struct RunnerOptions {
  bool quiet = false;                           // no training progress lines
  bool dry_run = false;                         // say what would run, run nothing
  std::function<void(const std::string&)> log;  // one line per event; may be empty
};

struct ExperimentResult {
  std::vector<RunResult> runs;
  bool interrupted = false;  // SIGINT/SIGTERM: stopped after checkpointing the current run
};

ExperimentResult run_experiment(const ExperimentSpec& spec, const RunnerOptions& options);

RunState run_state(const std::string& directory);

// The training config of one run and seed (its config file and overrides, out_dir = directory,
// run.seed = seed); throws std::invalid_argument naming the run.
train::TrainConfig run_config(const ExperimentRun& run, const std::string& directory,
                              uint64_t seed);

// The result file's contents for one finished seed; throws std::runtime_error naming the file
// when it is unreadable or not a result.
SeedResult read_seed_result(const std::string& directory);

}  // namespace reach::experiment
