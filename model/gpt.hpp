// GPT-style decoder: token embedding, pre-norm blocks (attention + GELU MLP), final norm,
// output head tied to the embedding. Attention per layer is dense, local window, or
// window + dilated offsets (Fibonacci or power-of-2) with the layer's alpha from the schedule;
// the normaliser over that key set is softmax, alpha-entmax, ASEntmax or SSMax; positions are
// RoPE, ALiBi, NoPE or NAPE.
#pragma once

#include <torch/torch.h>

#include <optional>

#include "model/model_config.hpp"

namespace reach::model {

class CausalSelfAttentionImpl : public torch::nn::Module {
 public:
  CausalSelfAttentionImpl(const ModelConfig& config, int64_t layer);
  torch::Tensor forward(const torch::Tensor& x);  // [B, T, D] -> [B, T, D]

  // The layer's alpha (learned: softplus(theta)); 0 for dense and window layers.
  double alpha() const;
  // The integer offsets this layer uses (learned: alpha * b rounded, i.e. frozen for inference).
  std::vector<int64_t> integer_offsets() const;
  // Learned schedule: theta (alpha = softplus(theta)); undefined for other schedules.
  const torch::Tensor& learned_theta() const { return theta_; }
  // Learned schedule: the value of softplus(theta) for the next forward only, read by the
  // caller together with other layers' (one device read for the whole model, not one per
  // layer). It must be the current value; without it the layer reads alpha itself.
  void use_alpha_value_once(double alpha) { next_alpha_value_ = alpha; }

 private:
  torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);
  // Dense causal softmax by matmul, with the ALiBi bias when there is one; without autograd
  // (evaluation) it runs in query blocks so long sequences need no T x T score matrix.
  torch::Tensor dense_softmax(const torch::Tensor& q, const torch::Tensor& k,
                              const torch::Tensor& v);
  // Any key set through the entmax operator (entmax, ASEntmax, SSMax, or softmax with ALiBi
  // over a sparse key set).
  torch::Tensor normalizer_op(const torch::Tensor& q, const torch::Tensor& k,
                              const torch::Tensor& v);
  // RoPE cos and sin for t positions, [t, head_dim / 2], cached per length, device and dtype.
  std::pair<torch::Tensor, torch::Tensor> rope_tables(int64_t t,
                                                      const torch::TensorOptions& options);

  ModelConfig config_;
  int64_t head_dim_;
  double static_alpha_ = 0;
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr};
  torch::Tensor offsets_;                   // float64 distances for static schedules
  torch::Tensor theta_;                     // learned schedule: alpha = softplus(theta)
  std::optional<double> next_alpha_value_;  // use_alpha_value_once
  torch::Tensor alibi_slopes_;          // [heads] float64 (0 for NoPE heads); undefined: no bias
  torch::Tensor entmax_alpha_;          // [heads] float64, entmax / asentmax
  torch::Tensor delta_, beta_, gamma_;  // [heads] log-n scaling (asentmax, ssmax)
  torch::Tensor rope_cos_, rope_sin_;   // rope_tables' cache
};
TORCH_MODULE(CausalSelfAttention);

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const ModelConfig& config, int64_t layer);
  torch::Tensor forward(const torch::Tensor& x);
  CausalSelfAttention attn{nullptr};

 private:
  torch::nn::LayerNorm ln1_{nullptr}, ln2_{nullptr};
  torch::nn::Linear fc_{nullptr}, out_{nullptr};
};
TORCH_MODULE(Block);

class GptImpl : public torch::nn::Module {
 public:
  // config.reach must be resolved (> 0) when attention is sparse.
  explicit GptImpl(const ModelConfig& config);
  torch::Tensor forward(const torch::Tensor& tokens);  // [B, T] int64 -> logits [B, T, V]
  const ModelConfig& config() const { return config_; }
  std::vector<Block> blocks;  // also registered as the ModuleList "blocks"

 private:
  ModelConfig config_;
  torch::nn::Embedding wte_{nullptr};
  torch::nn::LayerNorm ln_f_{nullptr};
  torch::nn::ModuleList block_list_{nullptr};
};
TORCH_MODULE(Gpt);

int64_t parameter_count(const torch::nn::Module& module);

}  // namespace reach::model
