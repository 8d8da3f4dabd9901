#include "model/gpt.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

#include "model/attention/factory.hpp"
#include "ops/block_ops.hpp"
#include "ops/linear_cross_entropy.hpp"

namespace reach::model {

RmsNormImpl::RmsNormImpl(int64_t dim) : weight_(register_parameter("weight", torch::ones({dim}))) {}

torch::Tensor RmsNormImpl::forward(const torch::Tensor& x) {
  return x * torch::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + kEps) * weight_;
}

torch::nn::AnyModule make_norm(const ModelConfig& config) {
  if (config.norm == Norm::rmsnorm) return torch::nn::AnyModule(RmsNorm(config.d_model));
  return torch::nn::AnyModule(torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.d_model})));
}

std::pair<torch::Tensor, torch::Tensor> add_norm_fused(const torch::nn::AnyModule& norm, Norm kind,
                                                       const torch::Tensor& x,
                                                       const torch::Tensor& pending) {
  if (kind == Norm::rmsnorm) {
    return ops::add_rms_norm(x, pending, norm.get<RmsNorm>()->weight(), RmsNormImpl::kEps);
  }
  const auto& ln = norm.get<torch::nn::LayerNorm>();
  return ops::add_layer_norm(x, pending, ln->weight, ln->bias, ln->options.eps());
}

BlockImpl::BlockImpl(const ModelConfig& config, int64_t layer)
    : kind_(config.mlp), norm_(config.norm) {
  ln1_ = make_norm(config);
  register_module("ln1", ln1_.ptr());
  attn = register_module("attn", attention::make_attention(config, layer));
  ln2_ = make_norm(config);
  register_module("ln2", ln2_.ptr());
  const int64_t hidden = mlp_hidden_of(config);
  const auto linear = [&](int64_t in, int64_t out) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(config.bias));
  };
  fc_ = register_module("fc", linear(config.d_model, hidden));
  if (kind_ == Mlp::swiglu) up_ = register_module("up", linear(config.d_model, hidden));
  out_ = register_module("out", linear(hidden, config.d_model));
}

namespace {

// A linear layer over the rows of x [..., in]: x as a 2-D matrix, so a bias goes into the matrix
// product (addmm: cuBLASLt's bias epilogue on the GPU). LibTorch's linear on a 3-D input under
// bf16 autocast ran matmul and then a separate add_ of the float32 bias into the bf16 output,
// a mixed-type, non-vectorised kernel: 11.7 ms of an 82.6 ms training step of the paper preset
// on the H200 (issue 15's profile, 32 calls), plus its AddBackward0 reductions.
// Under bf16 autocast with the fused kernels on, the layer runs as ops::linear_bias: the same
// products, its bias gradient summed by reach's column-sum kernels (torch's sum(0) over the bf16
// [65,536, 512] gradient took 1.0 ms a step in 16 calls).
torch::Tensor linear_rows(torch::nn::Linear linear, const torch::Tensor& x) {
  // CUDA only: the CPU path keeps LibTorch's own linear, so CPU results stay bit for bit.
  if (!x.is_cuda() || x.dim() < 2 || !linear->bias.defined()) return linear(x);
  auto sizes = x.sizes().vec();
  const auto rows = x.dim() == 2 ? x : x.reshape({-1, sizes.back()});
  const auto y = ops::linear_bias_supports(rows, linear->weight, linear->bias)
                     ? ops::linear_bias(rows, linear->weight, linear->bias)
                     : linear(rows);
  if (x.dim() <= 2) return y;
  sizes.back() = y.size(-1);
  return y.view(sizes);
}

}  // namespace

torch::Tensor BlockImpl::mlp(const torch::Tensor& x) {
  if (kind_ == Mlp::swiglu) {
    const auto gate = linear_rows(fc_, x), value = linear_rows(up_, x);
    if (ops::swiglu_supports(gate, value)) return linear_rows(out_, ops::swiglu(gate, value));
    return linear_rows(out_, torch::silu(gate) * value);
  }
  // GELU: on CUDA with the fused kernels on, fc's bias goes into the activation's kernel
  // (ops::bias_gelu) rather than the matrix product, so its gradient is summed where gelu's
  // backward is computed, not in a second pass over the [tokens, hidden] gradient.
  if (x.is_cuda() && fc_->bias.defined() && ops::fused_block_kernels_enabled()) {
    auto sizes = x.sizes().vec();
    const auto h0 = torch::nn::functional::linear(x.reshape({-1, sizes.back()}), fc_->weight);
    sizes.back() = h0.size(-1);
    if (ops::bias_gelu_supports(h0, fc_->bias)) {
      return linear_rows(out_, ops::bias_gelu(h0, fc_->bias).view(sizes));
    }
    // (A type the kernels do not take, e.g. float64 or float16 autocast: the same sum, unfused.)
    return linear_rows(out_, torch::gelu(h0 + fc_->bias).view(sizes));
  }
  return linear_rows(out_, torch::gelu(linear_rows(fc_, x)));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, attention::ForwardContext& context) {
  const auto a = attn->forward(ln1_.forward(x), context);
  auto h = x + a.residual;
  const auto mlp_in = a.mlp_input.defined() ? h + a.mlp_input : h;
  return h + mlp(ln2_.forward(mlp_in));
}

std::pair<torch::Tensor, torch::Tensor> BlockImpl::forward_fused(
    const torch::Tensor& x, const torch::Tensor& pending, attention::ForwardContext& context) {
  const auto norm = [this](const torch::nn::AnyModule& module, const torch::Tensor& a,
                           const torch::Tensor& b) { return add_norm_fused(module, norm_, a, b); };
  const auto [s, y1] = norm(ln1_, x, pending);
  const auto a = attn->forward(y1, context);
  torch::Tensor h, y2;
  if (a.mlp_input.defined()) {
    h = s + a.residual;
    y2 = norm(ln2_, h, a.mlp_input).second;
  } else {
    std::tie(h, y2) = norm(ln2_, s, a.residual);
  }
  return {h, mlp(y2)};
}

GptImpl::GptImpl(const ModelConfig& config) : config_(config) {
  validate(config);
  wte_ = register_module("wte", torch::nn::Embedding(config.vocab_size, config.d_model));
  block_list_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t l = 0; l < config.layers; ++l) {
    blocks.push_back(Block(config, l));
    block_list_->push_back(blocks.back());
  }
  ln_f_ = make_norm(config);
  register_module("ln_f", ln_f_.ptr());
  // GPT-2 initialisation: N(0, init_std = 0.02), residual projections scaled by 1/sqrt(2L).
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
      const double std = config.init_std;
      p.value().normal_(0.0, residual ? std / std::sqrt(2.0 * config.layers) : std);
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
  return head(hidden_states_with(context, tokens));
}

torch::Tensor GptImpl::hidden_states(const torch::Tensor& tokens) {
  attention::ForwardContext context;
  return hidden_states_with(context, tokens);
}

torch::Tensor GptImpl::head(const torch::Tensor& hidden) {
  return torch::matmul(hidden, wte_->weight.t());  // tied output head
}

torch::Tensor GptImpl::loss(const torch::Tensor& tokens, const torch::Tensor& targets,
                            int64_t ignore_index, int64_t chunk_rows) {
  return loss_of_hidden(hidden_states(tokens), targets, ignore_index, chunk_rows);
}

torch::Tensor GptImpl::loss_of_hidden(const torch::Tensor& hidden, const torch::Tensor& targets,
                                      int64_t ignore_index, int64_t chunk_rows) {
  if (chunk_rows < 0) {
    throw std::invalid_argument("loss: chunk_rows must be >= 0 (0: full logits), got " +
                                std::to_string(chunk_rows));
  }
  if (chunk_rows == 0) {
    const auto logits = head(hidden);
    return torch::nn::functional::cross_entropy(
        logits.view({-1, logits.size(-1)}), targets.reshape({-1}),
        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(ignore_index));
  }
  return ops::linear_cross_entropy(hidden.reshape({-1, hidden.size(-1)}), wte_->weight,
                                   targets.reshape({-1}), ignore_index, chunk_rows);
}

torch::Tensor GptImpl::hidden_states_with(attention::ForwardContext& context,
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
  // The fused residual add + norm kernels (LayerNorm and RMSNorm) on the GPU when switched on.
  if (ops::add_layer_norm_supports(x, config_.d_model)) {
    torch::Tensor pending;
    for (auto& block : blocks) std::tie(x, pending) = block->forward_fused(x, pending, context);
    return add_norm_fused(ln_f_, config_.norm, x, pending).second;
  }
  for (auto& block : blocks) x = block->forward(x, context);
  return ln_f_.forward(x);
}

int64_t parameter_count(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

}  // namespace reach::model
