// The training loop shared by `reach train` and `reach tasks train`: one optimizer step per
// batch (learning rate by warmup_cosine_lr, forward under bf16 autocast on CUDA, cross-entropy,
// backward, gradient clipping, AdamW, fused on CUDA), with hooks for what differs between run
// kinds: where batches come from, extra metrics of a logged step, held-out evaluation and
// checkpoints. The loop writes metrics.jsonl lines, prints progress, profiles phases, stops
// cleanly on SIGINT/SIGTERM (checkpoint first) and stops with an error on divergence.
//
// Divergence: a non-finite loss or gradient norm, or a loss spike: a step's loss above both
// kSpikeFactor x the median of the previous (up to kSpikeWindow) step losses and ln(vocab), the
// loss of a uniform guess (so the small swings of a nearly solved task are not spikes); the
// first step's loss above kSpikeFactor x ln(vocab). A checkpoint is never written from
// non-finite weights, so the last checkpoint on disk stays the last good one.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "model/gpt.hpp"

namespace reach::train {

inline constexpr double kSpikeFactor = 4.0;
inline constexpr size_t kSpikeWindow = 32;

// The loss-spike rule above, step by step.
class SpikeCheck {
 public:
  explicit SpikeCheck(double uniform_loss) : uniform_loss_(uniform_loss) {}
  // The reason when `loss` is a spike (or non-finite), else nullopt; remembers the loss.
  std::optional<std::string> check(double loss);

 private:
  double uniform_loss_;  // ln(vocab)
  std::deque<double> recent_;
};

// Seconds per step, smoothed for the printed tokens/s and ETA: an exponential moving average
// (weight kSmoothing on the history) with Adam's bias correction, so the first values are plain
// averages and a slow first step (allocation, warm-up) fades instead of jumping the ETA around.
class StepTimeSmoother {
 public:
  static constexpr double kSmoothing = 0.9;
  // Adds a window of `steps` steps that took `seconds`; returns the smoothed seconds per step.
  double add(double seconds, int64_t steps);
  double seconds_per_step() const;

 private:
  double average_ = 0;
  double weight_ = 0;  // 1 - kSmoothing^windows, the bias correction
};

struct LoopSettings {
  int64_t steps = 0;
  double lr = 0, min_lr = 0;
  int64_t warmup = 0;
  double grad_clip = 1.0;
  int64_t log_every = 1, eval_every = 0, checkpoint_every = 0;  // 0: never (but at the end)
  int64_t profile_steps = 0;
  int64_t tokens_per_step = 0;  // for tokens/s
  int64_t ignore_index = -100;  // targets not scored
  // 0: the loss through the full logits (net(input) and cross_entropy); > 0: the head and the
  // loss in chunks of this many rows (GptImpl::loss_of_hidden; train/loss_chunk_rows.hpp).
  int64_t loss_chunk_rows = 0;
  double flops_per_token = 0, peak_flops = 0;  // MFU when peak_flops > 0
  bool bf16 = false;
  // On CUDA: capture the step in a CUDA graph when it can be (train/captured_step.hpp).
  bool cuda_graph = false;
  bool quiet = false;
  std::string log_prefix = "[train]";
  int64_t stop_after_step = 0;      // for tests: stop (without a final checkpoint) after this step
  double first_loss_reference = 0;  // ln(vocab), for the spike check
};

// One step's tokens, on the CPU (in pinned memory when asked, for an asynchronous copy).
// Either `sequence`, [B, T + 1], whose first T columns are the input and last T the targets
// (one copy to the device), or `input` and `target`, [B, T] each.
struct StepBatch {
  torch::Tensor sequence, input, target;
  std::shared_ptr<const void> extra;  // what the hooks need of this batch (task examples)
};

struct LoopHooks {
  std::function<StepBatch(int64_t step, bool pinned)> batch;  // step is 0-based
  // Extra fields of a logged step's metrics line (task: the batch's answer accuracy), from the
  // step's batch and its logits (detached); may be empty.
  std::function<void(const StepBatch&, const torch::Tensor& logits, nlohmann::json& line)>
      logged_step;
  // Held-out loss at evaluation steps; may be empty (no evaluation).
  std::function<double()> evaluate;
  // Writes a checkpoint after `steps_done` steps; returns its path.
  std::function<std::string(int64_t steps_done)> checkpoint;
  // One metrics.jsonl line per step, in order.
  std::function<void(const nlohmann::json&)> metrics;

  // Data-parallel training (all empty for one process; see train/data_parallel.hpp). Every
  // rank runs the loop in step: after backward, reduce_gradients leaves the mean gradient over
  // the ranks in each parameter; average_loss turns a step's loss into the mean over the ranks
  // (what is logged and checked for divergence); any_rank is a collective telling whether any
  // rank passed true. A stop signal is then honoured where the ranks synchronize anyway (every
  // step on the CPU, at logged, evaluated and checkpointed steps on a GPU), all ranks together.
  std::function<void()> reduce_gradients;
  std::function<torch::Tensor(const torch::Tensor& loss)> average_loss;
  std::function<bool(bool)> any_rank;
};

struct LoopResult {
  int64_t steps_done = 0;
  double last_loss = 0;
  double heldout_loss = 0;
  double tokens_per_second = 0;  // over the whole run, untimed evaluation and checkpoints excluded
  double seconds = 0;            // wall time of the loop
  bool interrupted = false;
  std::string checkpoint;      // the last checkpoint written
  nlohmann::json last_logged;  // the last metrics line with its hook fields
};

// Runs steps start_step .. settings.steps - 1 on net (already on `device`) with `optimizer`.
// Throws std::runtime_error on divergence, naming the step and the last good checkpoint.
LoopResult run_loop(model::Gpt& net, torch::optim::AdamW& optimizer, const torch::Device& device,
                    int64_t start_step, const LoopSettings& settings, const LoopHooks& hooks);

// Keeps only the metrics.jsonl lines with step <= last_step (a resumed run rewrites what came
// after); no file, nothing to do.
void keep_metrics_through(const std::string& path, int64_t last_step);

// Whether every parameter of the model is finite.
bool weights_are_finite(model::GptImpl& net);

}  // namespace reach::train
