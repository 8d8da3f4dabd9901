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

// The KV cache's bytes per cached token for a model of `config` with `element_bytes`-wide
// entries (4: float32): every layer keeps each token's key and value per query head
// (2 * layers * d_model); the chunk family adds, at its encoder layer, the chunks' keys and
// values (2 * d_model per token) and one landmark per chunk (d_model / S per token). Constant
// extras (the chunk family's unfinished chunk: < S tokens of d_model) are not included.
double kv_cache_bytes_per_token(const ModelConfig& config, double element_bytes = 4);

// For benchmarks: fills `cache` (reserved, empty) with what a prefill of n tokens would leave
// in it, from random values: every layer's keys and values and, for the chunk family, the
// encoder layer's chunk keys, values, unit landmarks and unfinished chunk inputs, so decode can be
// timed at contexts too long to prefill (its work depends on the sizes, not the values);
// `batch` requests of n tokens each.
void fill_random_kv_cache(const ModelConfig& config, KvCache& cache, int64_t n,
                          const torch::TensorOptions& options, int64_t batch = 1);

class ChunkRetrievalAttention : public WindowAttention {
 public:
  ChunkRetrievalAttention(const ModelConfig& config, int64_t layer);

  // The selection the queries of a sequence of n tokens run with under `budget`
  // (budget.chunks replaces the top-k; budget.chunk_rule the rule, with as many slots as the
  // rule gives the last query's candidates).
  pattern::ChunkSelection selection(const AttentionBudget& budget, int64_t n) const;
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
