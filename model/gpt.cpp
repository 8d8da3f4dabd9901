#include "model/gpt.hpp"

#include <cmath>

#include "model/attention/factory.hpp"
#include "ops/block_ops.hpp"

namespace reach::model {

BlockImpl::BlockImpl(const ModelConfig& config, int64_t layer) {
  ln1_ =
      register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.d_model})));
  attn = register_module("attn", attention::make_attention(config, layer));
  ln2_ =
      register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.d_model})));
  fc_ = register_module("fc", torch::nn::Linear(config.d_model, config.mlp_ratio * config.d_model));
  out_ =
      register_module("out", torch::nn::Linear(config.mlp_ratio * config.d_model, config.d_model));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, attention::ForwardContext& context) {
  const auto a = attn->forward(ln1_(x), context);
  auto h = x + a.residual;
  const auto mlp_in = a.mlp_input.defined() ? h + a.mlp_input : h;
  return h + out_(torch::gelu(fc_(ln2_(mlp_in))));
}

std::pair<torch::Tensor, torch::Tensor> BlockImpl::forward_fused(
    const torch::Tensor& x, const torch::Tensor& pending, attention::ForwardContext& context) {
  const auto norm = [](const torch::nn::LayerNorm& ln, const torch::Tensor& a,
                       const torch::Tensor& b) {
    return ops::add_layer_norm(a, b, ln->weight, ln->bias, ln->options.eps());
  };
  const auto [s, y1] = norm(ln1_, x, pending);
  const auto a = attn->forward(y1, context);
  torch::Tensor h, y2;
  if (a.mlp_input.defined()) {
    h = s + a.residual;
    y2 = norm(ln2_, h, a.mlp_input).second;
  } else {
    std::tie(h, y2) = norm(ln2_, s, a.residual);
  }
  return {h, out_(torch::gelu(fc_(y2)))};
}

GptImpl::GptImpl(const ModelConfig& config) : config_(config) {
  validate(config);
  wte_ = register_module("wte", torch::nn::Embedding(config.vocab_size, config.d_model));
  block_list_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t l = 0; l < config.layers; ++l) {
    blocks.push_back(Block(config, l));
    block_list_->push_back(blocks.back());
  }
  ln_f_ =
      register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.d_model})));
  // GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2L).
  torch::NoGradGuard no_grad;
  for (auto& p : named_parameters()) {
    const auto& name = p.key();
    // Schedule and normaliser parameters keep their own initial values.
    if (name.ends_with("theta") || name.ends_with("attn.delta") || name.ends_with("attn.beta") ||
        name.ends_with("attn.gamma") || name.ends_with("attn.alpha_logit") ||
        name.find("attn.scale_") != std::string::npos) {
      continue;
    }
    if (name.ends_with(".bias")) {
      p.value().zero_();
    } else if (name.find("ln") != std::string::npos) {
      p.value().fill_(1.0);
    } else {
      const bool residual = name.ends_with("proj.weight") || name.ends_with("out.weight");
      p.value().normal_(0.0, residual ? 0.02 / std::sqrt(2.0 * config.layers) : 0.02);
    }
  }
}

void GptImpl::freeze_schedules() {
  for (auto& block : blocks) block->attn->freeze_schedule();
}

torch::Tensor GptImpl::forward(const torch::Tensor& tokens) {
  attention::ForwardContext context;
  return forward_with(context, tokens);
}

torch::Tensor GptImpl::forward_with(attention::ForwardContext& context,
                                    const torch::Tensor& tokens) {
  TORCH_CHECK(tokens.dim() == 2, "model input must be [batch, seq_len] token ids");
  TORCH_CHECK(tokens.scalar_type() == torch::kLong || tokens.scalar_type() == torch::kInt,
              "model input must be integer token ids (int64 or int32), got ", tokens.scalar_type());
  if (context.cache != nullptr && context.cache->layers() != config_.layers) {
    throw std::invalid_argument("KV cache has " + std::to_string(context.cache->layers()) +
                                " layers, the model " + std::to_string(config_.layers));
  }
  // The values layers need on the host (the learned schedule's alpha) in one read from the
  // device: one read per layer would stall the GPU each time.
  {
    torch::NoGradGuard no_grad;
    std::vector<attention::AttentionLayer*> layers;
    std::vector<torch::Tensor> values;
    for (auto& block : blocks) {
      if (auto value = block->attn->host_value(); value.defined()) {
        layers.push_back(block->attn.get());
        values.push_back(value);
      }
    }
    if (!values.empty()) {
      const auto host = torch::stack(values).to(torch::kCPU, torch::kFloat64);
      for (size_t i = 0; i < layers.size(); ++i) {
        layers[i]->use_host_value_once(host[static_cast<int64_t>(i)].item<double>());
      }
    }
  }
  auto x = wte_(tokens);
  if (ops::add_layer_norm_supports(x, config_.d_model)) {
    torch::Tensor pending;
    for (auto& block : blocks) std::tie(x, pending) = block->forward_fused(x, pending, context);
    const auto y =
        ops::add_layer_norm(x, pending, ln_f_->weight, ln_f_->bias, ln_f_->options.eps()).second;
    return torch::matmul(y, wte_->weight.t());  // tied output head
  }
  for (auto& block : blocks) x = block->forward(x, context);
  return torch::matmul(ln_f_(x), wte_->weight.t());  // tied output head
}

int64_t parameter_count(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

}  // namespace reach::model
