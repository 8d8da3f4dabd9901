// The chunk family's retrieval layer (docs/chunk_attention.md): local window attention (RoPE)
// plus top-k retrieval of past chunks (NoPE). The first retrieval layer (the model's middle
// layer) also owns the chunk encoder: it encodes the chunks of its input once and publishes
// their keys, values and landmarks in the ForwardContext; every retrieval layer (itself
// included) reads them there. Per token, the layer's own retrieval query scores the landmarks
// of fully past chunks, the selected chunks are attended with one softmax each and fused by
// the chunk weights (reach::chunk_attention). The retrieved output goes only into the MLP's
// input (bypass), or into the residual stream (model.chunk_residual = standard).
#pragma once

#include "model/attention/chunk_encoder.hpp"
#include "model/attention/window.hpp"
#include "pattern/chunk_selection.hpp"

namespace reach::model::attention {

class ChunkRetrievalAttention : public WindowAttention {
 public:
  ChunkRetrievalAttention(const ModelConfig& config, int64_t layer);

  // The selection a query runs with under `budget` (budget.chunks replaces the top-k).
  pattern::ChunkSelection selection(const AttentionBudget& budget) const;
  bool encodes() const { return !encoder_.is_empty(); }

 protected:
  AttentionOutput compute(const torch::Tensor& x, ForwardContext& context) override;

 private:
  // The encoder layer: encodes x's complete chunks (with a cache: those completed by x) and
  // publishes the memory.
  void publish_memory(const torch::Tensor& x, ForwardContext& context);
  torch::Tensor retrieve(const torch::Tensor& x, const ForwardContext& context);

  ChunkEncoder encoder_{nullptr};
  torch::nn::Linear query_{nullptr};  // token query and retrieval query, D -> 2D
  torch::nn::Linear retrieval_proj_{nullptr};
};

}  // namespace reach::model::attention
