#include "model/attention/cached_decode.hpp"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

namespace reach::model::attention {

bool decode_kernel_applies(const torch::Tensor& q, const ForwardContext& context, bool entmax) {
  if (q.device().is_cpu()) return true;
  ops::DecodeAttentionOptions asked;
  asked.entmax = entmax;
  bool mass = context.budget.mass.has_value();
  for (const auto& b : context.budgets) mass = mass || b.mass.has_value();
  if (mass) asked.mass.push_back(1.0);
  return ops::decode_attention_supported(q.device(), asked);
}

torch::Tensor decode_with_kernel(const torch::Tensor& q, const LayerKvCache& cache,
                                 ops::DecodeAttentionOptions key_set, const ForwardContext& context,
                                 bool windowed) {
  const int64_t batch = q.size(0), n = cache.length();
  if (!context.budgets.empty() && static_cast<int64_t>(context.budgets.size()) != batch) {
    throw std::invalid_argument("attention budget: " + std::to_string(context.budgets.size()) +
                                " per-request budgets for " + std::to_string(batch) + " requests");
  }
  const auto num_offsets = static_cast<int64_t>(key_set.offsets.size());
  // Request b's budget: its own in a batched step, else the context's.
  auto budget_of = [&](int64_t b) -> const AttentionBudget& {
    return context.budgets.empty() ? context.budget : context.budgets[static_cast<size_t>(b)];
  };
  bool any_window = false, any_rungs = false, any_mass = false;
  for (int64_t b = 0; b < batch; ++b) {
    any_window = any_window || (budget_of(b).window && windowed);
    any_rungs = any_rungs || budget_of(b).rungs;
    any_mass = any_mass || budget_of(b).mass;
  }
  for (int64_t b = 0; b < batch; ++b) {
    const auto& budget = budget_of(b);
    if (any_window) key_set.windows.push_back(budget.window.value_or(key_set.window));
    if (any_rungs) {
      const int64_t rungs = budget.rungs.value_or(num_offsets);
      if (rungs < 0) {
        throw std::invalid_argument("attention budget: rungs must be >= 0, got " +
                                    std::to_string(rungs));
      }
      key_set.rungs.push_back(std::min(rungs, num_offsets));
    }
    if (any_mass) key_set.mass.push_back(budget.mass.value_or(1.0));
  }
  // A batched cache's buffers have room for more requests than this step holds.
  const auto keys =
      cache.key_buffer.defined() ? cache.key_buffer.narrow(0, 0, batch) : cache.keys.contiguous();
  const auto values = cache.value_buffer.defined() ? cache.value_buffer.narrow(0, 0, batch)
                                                   : cache.values.contiguous();
  if (context.device_lengths.defined()) {
    // A step replayed from a CUDA graph: the kernel reads the lengths from the device; the
    // host passes the capacity as their bound. Per-request budgets would be host values baked
    // into the graph, and counting keys read needs the host lengths: neither is taken.
    if (any_window || any_rungs || any_mass || context.usage != nullptr) {
      throw std::invalid_argument(
          "attention: a decode step with device lengths (a CUDA graph) takes the trained key "
          "set only: no per-request budget, no count of keys read");
    }
    key_set.device_lengths = context.device_lengths;
    key_set.lengths_are_bounds = true;
    return ops::decode_attention(q.to(keys.scalar_type()), keys, values,
                                 std::vector<int64_t>(static_cast<size_t>(batch), cache.capacity),
                                 key_set)
        .out;
  }
  const auto lengths =
      cache.batched() ? cache.lengths : std::vector<int64_t>(static_cast<size_t>(batch), n);
  if (q.is_cuda()) {
    // Every layer of a step has the same lengths: the first uploads them, the others reuse the
    // device copy (the memo is keyed by the lengths and the device, so it is never stale).
    thread_local ops::DecodeLengths step_lengths;
    key_set.device_lengths = step_lengths.on(q.device(), lengths);
  }
  // On a GPU the cache keeps the projections' dtype (bf16 under autocast), which RoPE's float32
  // tables may have promoted q away from.
  auto result = ops::decode_attention(q.is_cuda() ? q.to(keys.scalar_type()) : q, keys, values,
                                      lengths, key_set);
  if (context.usage) {
    context.usage->queries += static_cast<int64_t>(result.keys_read.size());
    context.usage->keys +=
        std::accumulate(result.keys_read.begin(), result.keys_read.end(), int64_t{0});
  }
  return result.out;
}

}  // namespace reach::model::attention
