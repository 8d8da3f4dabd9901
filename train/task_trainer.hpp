// Synthetic-task runs (`reach tasks`): train a model on a task at a short length, then
// measure answer accuracy at multiples of that length. Training runs through the shared loop
// (train/loop.hpp): the GPU path (bf16 autocast, fused AdamW), exact resume, SIGINT/SIGTERM
// checkpoints, divergence checks. A run directory holds
//   config.toml        the full TaskRunConfig
//   model.safetensors  the trained weights (written atomically at the end, or when stopped)
//   metrics.jsonl      one line per training step (loss, lr, grad_norm, answer accuracy of
//                      the batch at logged steps)
//   checkpoints/step-NNNNNNNN/  weights, optimizer state, config.toml, state.json (the newest
//                      train.keep_checkpoints of them, plus any holding a `keep` file)
// and, after evaluation, accuracy.json / accuracy.md / accuracy.png (see cli/). As with
// `reach train`, the directory is locked while training, and one that holds a run is
// continued (resume) or replaced (overwrite), never trained over.
#pragma once

#include <array>
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

// The task-run config keys that may differ from the checkpoint's on resume (every other key
// shapes the weights or the example stream).
inline constexpr std::array<const char*, 13> kTaskResumeMutableKeys{"run.out_dir",
                                                                    "run.threads",
                                                                    "train.steps",
                                                                    "train.log_every",
                                                                    "train.checkpoint_every",
                                                                    "train.keep_checkpoints",
                                                                    "train.device",
                                                                    "train.precision",
                                                                    "train.loss_chunk_rows",
                                                                    "eval.multipliers",
                                                                    "eval.examples",
                                                                    "eval.batch",
                                                                    "eval.max_length"};

struct TaskTrainOptions {
  bool resume = false;          // continue from the newest valid checkpoint of the run directory
  bool overwrite = false;       // the run directory holds a run: delete it and start over
  bool quiet = false;           // no progress lines
  int64_t stop_after_step = 0;  // for tests: stop (without a final checkpoint) after this step
};

// The task length training step `step` (0-based) draws: train_length, or with
// train_min_length > 0 a uniform draw from [train_min_length, train_length] by the step's own
// random stream (the one its examples come from, so it is the same on resume).
int64_t training_step_length(const TaskRunConfig& config, int64_t step);

// Trains (deterministic given the seed, on the CPU bit for bit, a resumed run included),
// writes the run directory, returns the trained model (on the device it trained on) through
// `trained` when non-null.
TaskTrainResult train_task_model(const TaskRunConfig& config, const TaskTrainOptions& options,
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
  int64_t examples = 0;       // 0 when skipped
  double accuracy = 0;        // fraction of answers with every token right
  double token_accuracy = 0;  // fraction of the answers' tokens right (each on its own)
  double seconds = 0;
  // Peak GPU memory of one evaluation batch's forward (no autograd), MiB beyond what was
  // allocated before it (the weights); -1 when not measured (CPU, or skipped).
  double peak_gpu_mib = -1;
  std::string skipped;  // why it was not measured (empty when measured)
};

// Accuracy (on the device the model is on; bf16 autocast there per train.precision) at each
// multiple of config.train_length, on examples drawn from a stream seeded
// by (seed, length) that training never sees. Lengths above config.max_length are
// skipped. Memory: no autograd state is kept, and (without `logits`) the head runs only on
// the answer positions' hidden states, so no [B, T, V] logits are formed; on CUDA each
// length's peak memory is recorded (LengthAccuracy::peak_gpu_mib). `progress` (may be empty) is
// told each finished length; `batch_progress` (may be empty) each finished batch: (length, examples
// done, examples in all, seconds so far).
using BatchProgress = std::function<void(int64_t, int64_t, int64_t, double)>;
// `logits` (may be empty: the model's plain forward) maps a batch of tokens [B, T] on the
// model's device to logits [B, T, V]: e.g. the forward under a per-request attention budget.
using TaskLogits = std::function<torch::Tensor(const torch::Tensor& tokens)>;
std::vector<LengthAccuracy> evaluate_task_model(
    model::Gpt& model, const TaskRunConfig& config, const std::vector<int64_t>& multipliers,
    const std::function<void(const LengthAccuracy&)>& progress,
    const BatchProgress& batch_progress = {}, const TaskLogits& logits = {});

}  // namespace reach::train
