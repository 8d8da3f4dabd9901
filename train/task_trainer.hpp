// Synthetic-task runs (`reach tasks`): train a model on a task at a short length, then
// measure answer accuracy at multiples of that length. A run directory holds
//   config.toml        the full TaskRunConfig
//   model.safetensors  the trained weights (written atomically at the end)
//   metrics.jsonl      one line per training step (loss, answer accuracy of the batch, lr)
// and, after evaluation, accuracy.json / accuracy.md / accuracy.png (see cli/).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "model/gpt.hpp"
#include "train/task_config.hpp"

namespace reach::train {

struct TaskTrainResult {
  int64_t steps = 0;
  double final_loss = 0;
  double final_batch_accuracy = 0;  // answer accuracy on the last training batch
  double seconds = 0;
  bool interrupted = false;  // SIGINT/SIGTERM: weights saved, training stopped early
};

// Trains from scratch (deterministic given the seed), writes the run directory, returns
// the trained model through `trained` when non-null.
TaskTrainResult train_task_model(const TaskRunConfig& config, bool quiet,
                                 model::Gpt* trained = nullptr);

struct TaskRun {
  TaskRunConfig config;
  model::Gpt model{nullptr};
};
// Loads a run directory written by train_task_model; throws std::runtime_error naming the
// directory and the problem.
TaskRun load_task_run(const std::string& dir);

struct LengthAccuracy {
  int64_t multiplier = 0;
  int64_t length = 0;
  int64_t examples = 0;  // 0 when skipped
  double accuracy = 0;   // fraction of answers with every token right
  double seconds = 0;
  std::string skipped;  // why it was not measured (empty when measured)
};

// Accuracy at each multiple of config.train_length, on examples drawn from a stream seeded
// by (seed, length) that training never sees. Lengths above config.max_length are
// skipped. `progress` (may be empty) is told each finished length; `batch_progress` (may be
// empty) each finished batch: (length, examples done, examples in all, seconds so far).
using BatchProgress = std::function<void(int64_t, int64_t, int64_t, double)>;
std::vector<LengthAccuracy> evaluate_task_model(
    model::Gpt& model, const TaskRunConfig& config, const std::vector<int64_t>& multipliers,
    const std::function<void(const LengthAccuracy&)>& progress,
    const BatchProgress& batch_progress = {});

}  // namespace reach::train
