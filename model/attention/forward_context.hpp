// What one forward pass carries through the blocks besides the hidden states: where the
// tokens sit, the request's budget, the KV cache when decoding, and tensors one layer
// publishes for layers above it.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "model/attention/kv_cache.hpp"
#include "pattern/chunk_selection.hpp"

namespace reach::model::attention {

// The chunk family's count of chunks read as a rule of a query's candidate chunks C:
// ceil(coefficient * g(C)), at least 1 and at most C, with g(C) = C (fraction), sqrt(C) or
// log2(C) (pattern::selected_chunks).
struct ChunkCountRule {
  pattern::ChunkBudgetRule kind = pattern::ChunkBudgetRule::fraction;
  double coefficient = 1.0;
};

// How many keys a query reads, per request; changes nothing in the weights. Unset: the
// trained configuration. Each family reads what applies to it and ignores the rest.
struct AttentionBudget {
  // Dilated key sets: only the first (nearest) n offsets beyond the window.
  std::optional<int64_t> rungs;
  // Chunk family: top-k chunks per query (replaces chunk_top_k in the model's rule).
  std::optional<int64_t> chunks;
  // Chunk family: chunks read as a rule of each query's candidate count (replaces the model's
  // rule and its top-k); not with `chunks`.
  std::optional<ChunkCountRule> chunk_rule;
  // Chunk family, dynamic: of the selected chunks, keep those whose chunk weights (largest
  // first) reach this share p in (0, 1] of the selected weights' total, rescaled to it (CPU
  // inference only: the decode kernel).
  std::optional<double> chunk_mass;
  // Window and dilated key sets: the window W (offsets inside a widened window are dropped:
  // their keys are window slots already).
  std::optional<int64_t> window;
  // Decode steps: keep keys in score order until their attention mass reaches p in (0, 1].
  std::optional<double> mass;
};

// Keys read over the decode steps (the budget actually used): sums over queries x heads.
struct BudgetUsage {
  int64_t queries = 0;  // (query, head) pairs
  int64_t keys = 0;     // keys whose value they read
};

class ForwardContext {
 public:
  // Position of the first token of this forward's input (RoPE's offset). With a cache it
  // must equal the number of cached tokens.
  int64_t position = 0;
  AttentionBudget budget;
  // Set: the layers append their keys and values to it and attend over it (prefill when it
  // is empty, decode after). Null: plain causal attention over the input.
  KvCache* cache = nullptr;
  // A batched decode step over requests of different lengths (infer/batch_session): one
  // token per request, request b's at positions[b] (its cached length). Empty: every
  // request at `position`.
  std::vector<int64_t> positions;
  // Per-request budgets of such a step (empty: `budget` for every request).
  std::vector<AttentionBudget> budgets;
  // Defined: such a step whose positions live on the device (infer/decode_graph replays it
  // from a CUDA graph): request b's token sits at device_positions[b] (int64 [requests]) and it
  // holds device_lengths[b] = device_positions[b] + 1 keys after the step (int32). The layers
  // then read positions and lengths only from these (RoPE rows, the cache row written, the
  // decode kernel's lengths, with the capacity as the host bound) and leave the cache's host
  // lengths for the caller to advance: nothing computed depends on a host value that changes
  // from step to step. `positions` still holds the lengths at the time of the call.
  torch::Tensor device_positions, device_lengths;
  // Set: the layers add the keys they read (every query then runs through the decode
  // kernel, which counts them; on the CPU only).
  BudgetUsage* usage = nullptr;

  // Tensors a layer computes once for the layers above it in the same forward (the chunk
  // family's landmarks, made at the middle layer and read by every retrieval layer).
  void publish(const std::string& name, torch::Tensor value);
  bool has(const std::string& name) const { return shared_.contains(name); }
  // Throws std::logic_error naming the entry when no layer below published it.
  const torch::Tensor& read(const std::string& name) const;

 private:
  std::map<std::string, torch::Tensor> shared_;
};

}  // namespace reach::model::attention
