// A batched decode step captured once in a CUDA graph and replayed for every token after it.
// An eager decode step of a small model is bound by the launches of its few hundred small
// kernels (the projections, norms, RoPE, cache writes and attention of every layer for one
// token per request: ~1.7 ms for the tiny model on an H200 whatever the context, against a few
// microseconds of work per kernel); a replay issues them all in one launch.
//
// Everything a step reads that changes from step to step lives in static device tensors the
// graph reads: the tokens (copied in before each replay), and each request's position and
// length, which the graph itself advances by one at its end. The layers read them through
// ForwardContext::device_positions / device_lengths (RoPE rows, the cache row written, the
// decode kernel's lengths with the capacity as their host bound), so nothing baked into the
// graph goes stale. The first step runs eagerly in the same form (it warms LibTorch's
// allocator and the RoPE tables), the second is captured and replayed, the rest replayed.
//
// Takes what the CUDA decode kernel takes with nothing per step on the host: softmax over
// the dense, window, Fibonacci and power-of-two key sets (learned schedules frozen), RoPE or
// NoPE, grouped-query attention, bf16 (autocast) or float32; the trained key set only (no
// per-request budgets, no count of keys read). problem() says why a model is not taken.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>

#include "model/attention/kv_cache.hpp"
#include "model/gpt.hpp"

namespace reach::infer {

class DecodeGraph {
 public:
  // The model on a CUDA device and a batched cache of its requests (BatchSession's, or
  // KvCache with split_into_requests); the graph holds the requests present now and is
  // rebuilt by its owner when they change. Throws std::invalid_argument with problem().
  DecodeGraph(model::Gpt model, model::attention::KvCache& cache);
  ~DecodeGraph();
  DecodeGraph(const DecodeGraph&) = delete;
  DecodeGraph& operator=(const DecodeGraph&) = delete;

  // Empty when the model and cache are taken; else why not, in one line.
  static std::string problem(const model::Gpt& model, const model::attention::KvCache& cache);
  // The model's part of problem() (device, family, normaliser, positions, schedules).
  static std::string model_problem(const model::Gpt& model);
  // Whether this build can capture CUDA graphs (LibTorch with CUDA).
  static bool available();

  // One token per request (int64 [requests], any device); logits [requests, vocab] on the
  // device, valid until the next step (the graph's own output buffer). Advances the cache's
  // host lengths. Throws std::length_error when a request is full.
  torch::Tensor step(const torch::Tensor& tokens);

  int64_t requests() const { return requests_; }
  // Steps run from the graph so far (the first, eager step not counted).
  int64_t replays() const { return replays_; }

 private:
  struct Captured;
  torch::Tensor run_step();  // the step itself, in device-position form

  model::Gpt model_;
  model::attention::KvCache& cache_;
  int64_t requests_ = 0, steps_ = 0, replays_ = 0;
  torch::Tensor tokens_, positions_, lengths_, logits_;
  std::unique_ptr<Captured> captured_;
};

}  // namespace reach::infer
