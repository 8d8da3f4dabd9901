// Several requests of different lengths decoded together: each request is prefilled on its
// own (the fused forward over its prompt), its keys and values copied into one shared
// cache; then each step() advances every request by one token in a single forward (the
// projections, MLPs and head as one batch, attention through the decode kernel with each
// request's own length and budget). Request i's logits equal running it alone in a Session.
// On the CPU or, for the layers the GPU decode op takes (softmax key sets without a mass
// budget: ops::decode_attention_supported), on the model's CUDA device; logits come back as
// float32 on the CPU, as a Session returns them.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "infer/budget_rule.hpp"
#include "infer/decode_graph.hpp"
#include "model/attention/forward_context.hpp"
#include "model/attention/kv_cache.hpp"
#include "model/gpt.hpp"

namespace reach::infer {

class BatchSession {
 public:
  // Up to max_requests requests, each holding at most `capacity` tokens (prompt + new).
  BatchSession(model::Gpt model, int64_t max_requests, int64_t capacity);

  // Prefills a new request (at least one token, within the capacity) under its budget and
  // adds it to the batch; returns its prompt logits [T, V]. Requests may join between steps.
  torch::Tensor add(const std::vector<int64_t>& prompt, BudgetRule budget = {});
  // One token per request, in the order they were added; logits [requests, V] (float32).
  torch::Tensor step(const std::vector<int64_t>& tokens);

  int64_t requests() const { return static_cast<int64_t>(budgets_.size()); }
  int64_t length(int64_t request) const;
  // Keys read per query and head over the decode steps so far, all requests together (the
  // eager steps: a step replayed from a CUDA graph does not count them).
  const model::attention::BudgetUsage& usage() const { return usage_; }

  // On a CUDA device: run the steps from a CUDA graph (infer/decode_graph) while every
  // request decodes under its trained key set and the model is one the graph takes
  // (DecodeGraph::problem); otherwise, and by default, steps run eagerly. The graph is
  // captured again after a request joins. Same logits (the same kernels; the float32 bound
  // of the tests is 1e-5 relative).
  void use_cuda_graph(bool on);
  // Steps replayed from a graph so far.
  int64_t graph_steps() const { return graph_steps_; }

 private:
  model::Gpt model_;
  int64_t max_requests_, capacity_;
  std::vector<BudgetRule> budgets_;
  model::attention::KvCache cache_;
  model::attention::BudgetUsage usage_;
  bool use_graph_ = false;
  std::unique_ptr<DecodeGraph> graph_;
  int64_t graph_steps_ = 0;
};

}  // namespace reach::infer
