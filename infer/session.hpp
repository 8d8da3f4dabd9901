// One request's incremental state: the model, its KV cache (preallocated for the request's
// capacity, grown by appending) and its budget rule. prefill() runs the model's normal fused
// forward over the prompt and fills the cache; step() runs one token through the decode
// kernels, each layer reading only the keys its family needs.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "infer/budget_rule.hpp"
#include "infer/decode_graph.hpp"
#include "model/attention/forward_context.hpp"
#include "model/attention/kv_cache.hpp"
#include "model/gpt.hpp"

namespace reach::infer {

class Session {
 public:
  // capacity: the most tokens this request will hold (prompt + new tokens).
  Session(model::Gpt model, int64_t capacity, BudgetRule budget = {});

  // Logits [T, V] (float32) of every prompt position. Only on an empty session.
  torch::Tensor prefill(const std::vector<int64_t>& tokens);
  // Appends one token; logits [V] (float32) of the position after it.
  torch::Tensor step(int64_t token);

  int64_t length() const { return cache_.length(); }
  int64_t capacity() const { return capacity_; }
  // Keys read per query and head over the decode steps so far (the budget actually used; the
  // eager steps: a step replayed from a CUDA graph does not count them).
  const model::attention::BudgetUsage& usage() const { return usage_; }

  // On a CUDA device: decode steps replayed from a CUDA graph (infer/decode_graph) when the
  // budget is the trained key set ("full") and the model is one the graph takes; else, and by
  // default, eager steps. The logits are the eager steps' (the same kernels).
  void use_cuda_graph(bool on) { use_graph_ = on; }
  // Steps replayed from the graph so far; why the graph was not used, if it was asked for and
  // refused (empty otherwise).
  int64_t graph_steps() const { return graph_ ? graph_->replays() : 0; }
  const std::string& graph_refused() const { return graph_refused_; }

 private:
  torch::Tensor forward(const std::vector<int64_t>& tokens);

  model::Gpt model_;
  int64_t capacity_;
  BudgetRule budget_;
  model::attention::KvCache cache_;
  model::attention::BudgetUsage usage_;
  bool use_graph_ = false;
  std::unique_ptr<DecodeGraph> graph_;
  std::string graph_refused_;
};

}  // namespace reach::infer
