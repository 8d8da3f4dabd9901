// The interface every attention family implements: one layer's causal self-attention,
// [B, T, D] -> [B, T, D], registered in its block as "attn" (its parameters are
// blocks.<l>.attn.<name> in checkpoints).
//
// The base owns what every family shares: the qkv and output projections, RoPE (at the
// positions the context gives), the KV cache bookkeeping. A family implements attend() (and,
// for a fast decode, attend_cached()); one whose layer is more than that (the chunk family's
// retrieval, with its own projections and a bypassing output) overrides compute().
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "model/attention/forward_context.hpp"
#include "model/attention/positions.hpp"
#include "model/model_config.hpp"

namespace reach::model::attention {

struct AttentionOutput {
  torch::Tensor residual;  // [B, T, D], added to the residual stream
  // [B, T, D] or undefined: added to the MLP's input only, never to the residual stream
  // (the chunk family's bypassing retrieval path: out = h + mlp(norm(h + mlp_input))).
  torch::Tensor mlp_input;
};

class AttentionLayer : public torch::nn::Module {
 public:
  AttentionLayer(const ModelConfig& config, int64_t layer);

  AttentionOutput forward(const torch::Tensor& x, ForwardContext& context) {
    return compute(x, context);
  }
  torch::Tensor forward(const torch::Tensor& x);  // a fresh context: positions from 0, no cache

  // The layer's dilation scale alpha (learned: its current value); 0 without offsets.
  virtual double alpha() const { return 0; }
  // The integer offsets beyond the window this layer reads (learned: alpha * b rounded, i.e.
  // frozen for inference); empty for dense and window layers.
  virtual std::vector<int64_t> integer_offsets() const { return {}; }

  // A value this layer needs on the host for its next forward (the learned schedule's alpha,
  // to build its offsets), as a 0-dim float64 tensor on the parameters' device; undefined
  // when it needs none. The model reads every layer's in one device read (one read per layer
  // would stall the GPU each time) and hands each back through use_host_value_once.
  virtual torch::Tensor host_value() const { return {}; }
  // The value of host_value() for the next forward only; it must be the current value.
  virtual void use_host_value_once(double /*value*/) {}
  // For inference: a learned schedule's real offsets become integer_offsets() from now on
  // (prefill and decode alike); nothing to do for the other families.
  virtual void freeze_schedule() {}

 protected:
  // True when attend() takes k, v with kv_heads < heads (grouped-query attention: query head h
  // reads K/V head h / (heads / kv_heads)); otherwise the base hands it K/V per query head.
  virtual bool reads_grouped_kv() const { return false; }
  // q: [B, H, T, head_dim], k, v: [B, H or kv_heads, T, head_dim], contiguous (or token-major
  // views: attends_token_major()), RoPE applied; causal attention of each query over the keys
  // of this family -> [B, H, T, head_dim].
  virtual torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const ForwardContext& context) = 0;
  // Decode: q holds the last t positions of cache (which already has their keys and values);
  // -> [B, H, t, head_dim]. The default runs attend() over the whole cache with zero queries
  // before q and keeps q's rows (exact, as a query's output depends only on its own row, but
  // it reads every key); families override it to read only the keys they need.
  virtual torch::Tensor attend_cached(const torch::Tensor& q, const LayerKvCache& cache,
                                      const ForwardContext& context);
  // Whether attend() takes q, k, v as [B, H, T, head_dim] views of [B, T, H, head_dim]
  // tensors (scaled_dot_product_attention does: it reads and writes that layout, so the fused
  // GPU path then needs no layout copy on either side of attention).
  virtual bool attends_token_major(const torch::Tensor& /*q*/) const { return false; }
  // The whole layer; the default projects, applies RoPE, keeps the cache and calls attend /
  // attend_cached.
  virtual AttentionOutput compute(const torch::Tensor& x, ForwardContext& context);
  // compute()'s batched decode step (context.positions set): q, k, v [B, H, 1, hd], each
  // request's token at its own position; -> [B, 1, D] before the output projection.
  torch::Tensor batched_step(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                             const ForwardContext& context);

  const ModelConfig& config() const { return config_; }
  int64_t layer() const { return layer_; }
  int64_t head_dim() const { return head_dim_; }

 private:
  ModelConfig config_;
  int64_t layer_;
  int64_t head_dim_;
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr};
  RopeTables rope_;
};

}  // namespace reach::model::attention
