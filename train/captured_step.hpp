// A training step captured once in a CUDA graph and replayed for every later step (issue 15:
// the paper preset's step is ~900 kernels, and launching them one by one from the host left the
// GPU idle between some of them). The step itself (forward + loss, backward, gradient clipping,
// fused AdamW at a learning rate read from the device) is the caller's: this class owns the
// static device tensors the graph reads (the batch, the learning rate), the side stream it is
// captured on, and the order of the runs:
//   run 1: the step eagerly on the side stream (lazy set-up: BLAS workspaces, optimizer state,
//          RoPE tables; nothing a capture may not do is left for the capture);
//   run 2: the gradients set to none, the step captured (it runs nothing), then replayed;
//   run 3 on: the batch and learning rate copied into the static tensors, one replay.
// The graph keeps its own memory pool for the step's activations and gradients, so the
// parameters' .grad() after a replay are the graph's tensors; nothing may zero them between
// replays (the graph's backward writes them whole, it does not accumulate).
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>

#include "model/gpt.hpp"

namespace reach::train {

// The device tensors of one step's batch: `sequence` [B, T + 1], or `input` and `target` [B, T].
struct DeviceBatch {
  torch::Tensor sequence, input, target;
};

// What a step leaves for the host: its loss and gradient norm (0-dim, on the device).
struct StepOutputs {
  torch::Tensor loss, grad_norm;
};

class CapturedTrainStep {
 public:
  // The step: trains on `batch` at learning rate `lr` (one float32 on the device) and returns
  // its outputs; it must not synchronize with the host (a capture forbids it).
  using Body = std::function<StepOutputs(const DeviceBatch& batch, const torch::Tensor& lr)>;

  // Empty when a training step of `net` can be captured (CUDA, and every op of its forward and
  // backward free of host reads), else the reason: the families and options whose kernels were
  // checked under capture are accepted, the rest named.
  static std::string problem(const model::Gpt& net);

  // The step trains a model on `device` (a CUDA device).
  CapturedTrainStep(Body body, torch::Device device);
  ~CapturedTrainStep();
  CapturedTrainStep(const CapturedTrainStep&) = delete;
  CapturedTrainStep& operator=(const CapturedTrainStep&) = delete;

  // Whether `batch` (host tensors of the loop's StepBatch) has the shapes and types of the
  // first one: a different batch runs eagerly instead (the caller's choice).
  bool accepts(const torch::Tensor& sequence, const torch::Tensor& input,
               const torch::Tensor& target) const;

  // One step on this batch (host tensors, pinned for an asynchronous copy) at `lr`. Returns
  // copies of the outputs (the graph's own are overwritten by the next replay). On a failed
  // capture it throws std::runtime_error naming the cause; the step did not run, the caller
  // runs it eagerly and stops using this object.
  StepOutputs run(const torch::Tensor& sequence, const torch::Tensor& input,
                  const torch::Tensor& target, double lr);

  int64_t runs() const { return runs_; }
  int64_t replays() const { return replays_; }

 private:
  struct State;
  Body body_;
  torch::Device device_;
  std::unique_ptr<State> state_;
  int64_t runs_ = 0, replays_ = 0;
};

}  // namespace reach::train
