#include "model/attention/attention_layer.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "ops/block_ops.hpp"

namespace reach::model::attention {

AttentionLayer::AttentionLayer(const ModelConfig& config, int64_t layer)
    : config_(config),
      layer_(layer),
      head_dim_(config.d_model / config.heads),
      rope_(config.d_model / config.heads, config.rope_base) {
  // q: heads x head_dim, k and v: kv_heads x head_dim each (grouped-query attention).
  const int64_t kv_width = kv_heads_of(config) * head_dim_;
  qkv_ = register_module(
      "qkv",
      torch::nn::Linear(
          torch::nn::LinearOptions(config.d_model, config.d_model + 2 * kv_width).bias(false)));
  proj_ = register_module(
      "proj",
      torch::nn::Linear(torch::nn::LinearOptions(config.d_model, config.d_model).bias(false)));
}

torch::Tensor AttentionLayer::forward(const torch::Tensor& x) {
  ForwardContext context;
  return compute(x, context).residual;
}

AttentionOutput AttentionLayer::compute(const torch::Tensor& x, ForwardContext& context) {
  const int64_t b = x.size(0), t = x.size(1);
  // On a GPU, one kernel splits qkv into the attention layout and applies RoPE (issue 15:
  // the tensor ops below cost ~25 ms of a 127 ms training step there). The CPU keeps them.
  if (x.is_cuda() && ops::fused_block_kernels_enabled() && context.cache == nullptr &&
      config_.positions == Positions::rope && kv_heads_of(config_) == config_.heads) {
    const auto projected = qkv_(x);
    const auto [cos, sin] =
        rope_.get(context.position, t, projected.options().dtype(torch::kFloat32));
    const auto [q, k, v] = ops::rope_split(projected, config_.heads, cos.contiguous(),
                                           sin.contiguous(), attends_token_major(projected));
    const auto y = attend(q, k, v, context);
    // A token-major output is already [B, T, H, hd] in memory (the reshape is a view); a
    // heads-first one moves in one 16-byte-wide pass (LibTorch's strided copy is ~3x slower).
    const bool as_laid_out = y.transpose(1, 2).is_contiguous();
    const bool wide_rows = y.size(3) * static_cast<int64_t>(y.element_size()) % 16 == 0;
    return {proj_(as_laid_out || !wide_rows ? y.transpose(1, 2).reshape({b, t, config_.d_model})
                                            : ops::merge_heads(y)),
            {}};
  }
  const int64_t kv_heads = kv_heads_of(config_);
  torch::Tensor q, k, v;
  if (kv_heads == config_.heads) {
    auto qkv = qkv_(x).view({b, t, 3, config_.heads, head_dim_}).permute({2, 0, 3, 1, 4});
    // unbind, not qkv[0], qkv[1], qkv[2]: its backward stacks the three gradients once, where
    // each index's would write a zero-filled gradient of all of qkv and then sum the three.
    const auto parts = qkv.unbind(0);
    q = parts[0], k = parts[1], v = parts[2];
  } else {
    const auto parts =
        qkv_(x).split_with_sizes({config_.d_model, kv_heads * head_dim_, kv_heads * head_dim_}, -1);
    q = parts[0].view({b, t, config_.heads, head_dim_}).transpose(1, 2);
    k = parts[1].view({b, t, kv_heads, head_dim_}).transpose(1, 2);
    v = parts[2].view({b, t, kv_heads, head_dim_}).transpose(1, 2);
  }
  if (!context.positions.empty()) return {proj_(batched_step(q, k, v, context)), {}};
  if (config_.positions == Positions::rope) {
    const auto [cos, sin] = rope_.get(context.position, t, q.options());
    q = apply_rope(q, cos, sin);
    k = apply_rope(k, cos, sin);
  }
  // A dynamic (mass) budget is a cut per query, and counting the keys read needs each query's
  // key set: both run every query through the decode kernel (the same operator, row by row).
  const bool per_query = context.budget.mass.has_value() || context.usage != nullptr;
  if (context.budget.mass && !q.device().is_cpu()) {
    throw std::invalid_argument(
        "attention budget: mass (the dynamic budget) runs on the CPU decode kernel only; the "
        "model is on " +
        q.device().str());
  }
  const int64_t group = config_.heads / kv_heads;
  if (group > 1 && (context.cache != nullptr || per_query || !reads_grouped_kv())) {
    // Families without grouped K/V in their kernels, the KV cache and the per-query decode
    // kernel (for now) get K/V per query head: exact, but without GQA's memory saving there.
    k = k.repeat_interleave(group, 1);
    v = v.repeat_interleave(group, 1);
  }
  torch::Tensor y;  // [B, H, T, hd]
  if (context.cache != nullptr) {
    auto& cache = context.cache->layer(layer_);
    if (cache.length() != context.position) {
      throw std::invalid_argument("attention: the input starts at position " +
                                  std::to_string(context.position) + " but layer " +
                                  std::to_string(layer_) + "'s cache holds " +
                                  std::to_string(cache.length()) + " tokens");
    }
    cache.append(k.contiguous(), v.contiguous());
    y = cache.length() == t && !per_query
            ? attend(q.contiguous(), cache.keys, cache.values, context)
            : attend_cached(q.contiguous(), cache, context);
  } else if (per_query) {
    LayerKvCache rows;
    rows.keys = k.contiguous();
    rows.values = v.contiguous();
    y = attend_cached(q.contiguous(), rows, context);
  } else {
    y = attend(q.contiguous(), k.contiguous(), v.contiguous(), context);
  }
  return {proj_(y.transpose(1, 2).reshape({b, t, config_.d_model})), {}};
}

torch::Tensor AttentionLayer::batched_step(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                           const ForwardContext& context) {
  const int64_t b = q.size(0);
  const auto& positions = context.positions;
  if (context.cache == nullptr || q.size(2) != 1 || static_cast<int64_t>(positions.size()) != b) {
    throw std::invalid_argument(
        "attention: a batched decode step needs the cache and one token per request with its "
        "position");
  }
  auto& cache = context.cache->layer(layer_);
  if (cache.lengths != positions) {
    throw std::invalid_argument("attention: a batched step's positions differ from layer " +
                                std::to_string(layer_) + "'s cached lengths");
  }
  const bool on_device = context.device_positions.defined();
  if (config_.positions == Positions::rope) {
    // Each request's token at its own position: rows of the tables, one per request. With the
    // positions on the device, tables for the whole capacity (built once, never regrown).
    const int64_t last = *std::max_element(positions.begin(), positions.end());
    const auto [cos, sin] = rope_.get(0, on_device ? cache.capacity : last + 1, q.options());
    const auto index = on_device ? context.device_positions
                                 : torch::tensor(positions, torch::kLong).to(q.device());
    const auto c = cos.index_select(0, index).view({b, 1, 1, -1});
    const auto s = sin.index_select(0, index).view({b, 1, 1, -1});
    q = apply_rope(q, c, s);
    k = apply_rope(k, c, s);
  }
  if (k.size(1) != q.size(1)) {
    // The cache holds K/V per query head (as the single-request cache does).
    k = k.repeat_interleave(q.size(1) / k.size(1), 1);
    v = v.repeat_interleave(q.size(1) / v.size(1), 1);
  }
  if (on_device) {
    cache.write_batched(k.contiguous(), v.contiguous(), context.device_positions);
  } else {
    cache.append_batched(k.contiguous(), v.contiguous());
  }
  const auto y = attend_cached(q.contiguous(), cache, context);
  return y.transpose(1, 2).reshape({b, 1, config_.d_model});
}

torch::Tensor AttentionLayer::attend_cached(const torch::Tensor& q, const LayerKvCache& cache,
                                            const ForwardContext& context) {
  if (cache.batched() && !q.device().is_cpu()) {
    // A full forward over the batched cache would read every request as the longest one.
    throw std::invalid_argument(
        "attention: a batched step of requests of different lengths on " + q.device().str() +
        " needs the GPU decode op, which takes softmax key sets without a mass budget (entmax, "
        "ASEntmax and mass budgets decode batched on the CPU)");
  }
  const int64_t t = q.size(2), n = cache.length();
  auto shape = q.sizes().vec();
  shape[2] = n - t;
  const auto queries = torch::cat({torch::zeros(shape, q.options()), q}, 2);
  return attend(queries, cache.keys, cache.values, context).narrow(2, n - t, t);
}

}  // namespace reach::model::attention
