// GPT-style decoder: token embedding, pre-norm blocks (attention + GELU or SwiGLU MLP), final norm,
// output head tied to the embedding. Each block's attention is the family the config names
// (model/attention/factory.hpp), behind one interface (model/attention/attention_layer.hpp).
#pragma once

#include <torch/torch.h>

#include <memory>

#include "model/attention/attention_layer.hpp"
#include "model/attention/forward_context.hpp"
#include "model/model_config.hpp"

namespace reach::model {

// RMSNorm: x / sqrt(mean(x^2) + eps) * weight (no bias, no centring), eps 1e-6 as the main
// paper's code. Its parameter is "weight", like LayerNorm's.
class RmsNormImpl : public torch::nn::Module {
 public:
  static constexpr double kEps = 1e-6;
  explicit RmsNormImpl(int64_t dim);
  torch::Tensor forward(const torch::Tensor& x);
  const torch::Tensor& weight() const { return weight_; }

 private:
  torch::Tensor weight_;
};
TORCH_MODULE(RmsNorm);

// The block's normalisation layer as the config names it (LayerNorm or RMSNorm).
torch::nn::AnyModule make_norm(const ModelConfig& config);

// A norm module of make_norm on the GPU's fused kernels (ops::add_layer_norm or
// ops::add_rms_norm): {h, y} with h = x + pending (pending undefined: x) and y = norm(h).
std::pair<torch::Tensor, torch::Tensor> add_norm_fused(const torch::nn::AnyModule& norm, Norm kind,
                                                       const torch::Tensor& x,
                                                       const torch::Tensor& pending);

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const ModelConfig& config, int64_t layer);
  torch::Tensor forward(const torch::Tensor& x, attention::ForwardContext& context);
  // The same block on the GPU's fused kernels (ops/block_ops.hpp), with the residual stream
  // carried as a pair: the block's input is x + pending (pending undefined: x), and it returns
  // {h, mlp_out} whose sum is its output, so each residual add happens inside the next
  // norm's kernel (LayerNorm or RMSNorm). Same function as forward, other rounding.
  std::pair<torch::Tensor, torch::Tensor> forward_fused(const torch::Tensor& x,
                                                        const torch::Tensor& pending,
                                                        attention::ForwardContext& context);
  std::shared_ptr<attention::AttentionLayer> attn;  // registered as "attn"

 private:
  // SwiGLU's silu(fc x) * up x runs in one fused kernel (ops::swiglu) on CUDA tensors when the
  // fused kernels are on, and GELU's fc bias add + gelu in another (ops::bias_gelu, which also
  // sums fc's bias gradient in its backward); the CPU keeps the tensor ops.
  torch::Tensor mlp(const torch::Tensor& x);
  Mlp kind_;
  Norm norm_;
  torch::nn::AnyModule ln1_, ln2_;
  // GELU: fc -> gelu -> out. SwiGLU: out(silu(fc x) * up x) (fc is the gate).
  torch::nn::Linear fc_{nullptr}, up_{nullptr}, out_{nullptr};
};
TORCH_MODULE(Block);

class GptImpl : public torch::nn::Module {
 public:
  // config.reach must be resolved (> 0) when attention is sparse.
  explicit GptImpl(const ModelConfig& config);
  torch::Tensor forward(const torch::Tensor& tokens);  // [B, T] int64 -> logits [B, T, V]
  // The same with a context: tokens at positions context.position..., a budget, and with
  // context.cache set, prefill (empty cache) or decode (the cache holds the earlier tokens).
  // (Not an overload of forward: ModuleHolder's call operator needs one forward.)
  torch::Tensor forward_with(attention::ForwardContext& context, const torch::Tensor& tokens);
  // The final norm's output [B, T, D], what the tied head multiplies: forward(tokens) is
  // head(hidden_states(tokens)), bit for bit.
  torch::Tensor hidden_states(const torch::Tensor& tokens);
  torch::Tensor hidden_states_with(attention::ForwardContext& context, const torch::Tensor& tokens);
  // The tied output head: hidden [..., D] -> logits [..., V].
  torch::Tensor head(const torch::Tensor& hidden);
  // Mean next-token cross-entropy of tokens [B, T] against targets [B, T] (targets equal to
  // ignore_index are not scored). chunk_rows 0: through the full logits and torch's
  // cross_entropy (what training always did); > 0: ops::linear_cross_entropy over that many
  // rows of logits at a time, never the [B * T, V] logits in full (train.loss_chunk_rows).
  torch::Tensor loss(const torch::Tensor& tokens, const torch::Tensor& targets,
                     int64_t ignore_index, int64_t chunk_rows);
  // The same from hidden_states' output.
  torch::Tensor loss_of_hidden(const torch::Tensor& hidden, const torch::Tensor& targets,
                               int64_t ignore_index, int64_t chunk_rows);
  const ModelConfig& config() const { return config_; }
  // Inference: every learned schedule's offsets become integers (freeze_schedule).
  void freeze_schedules();
  std::vector<Block> blocks;  // also registered as the ModuleList "blocks"

 private:
  ModelConfig config_;
  torch::nn::Embedding wte_{nullptr};
  torch::nn::AnyModule ln_f_;
  torch::nn::ModuleList block_list_{nullptr};
};
TORCH_MODULE(Gpt);

int64_t parameter_count(const torch::nn::Module& module);

}  // namespace reach::model
