#include "model/gpt.hpp"

#include <torch/version.h>

#include <cmath>
#include <utility>

#include "ops/dilated_attention.hpp"
#include "ops/entmax_attention.hpp"
#include "pattern/alpha_schedule.hpp"
#include "pattern/dilated_offsets.hpp"

namespace reach::model {
namespace {

// GPT-NeoX-style rotary embedding on [B, H, T, hd]: rotate the two halves of each head.
// cos and sin are [T, hd / 2] tables in x's dtype (see CausalSelfAttentionImpl::rope_tables).
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos,
                         const torch::Tensor& sin) {
  // chunk, not two narrows: its backward is one cat, where each narrow's would write a
  // zero-filled full-size gradient and add the two.
  const auto halves = x.chunk(2, -1);
  const auto &x1 = halves[0], &x2 = halves[1];
  return torch::cat({x1 * cos - x2 * sin, x1 * sin + x2 * cos}, -1);
}

// ALiBi slopes for h heads: 2^(-8 i / h), i = 1..h.
torch::Tensor alibi_slopes(int64_t heads) {
  auto i = torch::arange(1, heads + 1, torch::kFloat64);
  return torch::pow(2.0, -8.0 * i / static_cast<double>(heads));
}

// Per-head slopes for the positions scheme; undefined when there is no distance bias.
// NAPE: the first half of the heads NoPE (slope 0), the rest ALiBi with the slopes of a
// model of that many heads.
torch::Tensor position_slopes(const ModelConfig& c) {
  if (c.positions == "alibi") return alibi_slopes(c.heads);
  if (c.positions != "nape") return {};
  const int64_t nope = c.heads / 2;
  return torch::cat({torch::zeros({nope}, torch::kFloat64), alibi_slopes(c.heads - nope)});
}

double inverse_softplus(double y) { return y > 20 ? y : std::log(std::expm1(y)); }

bool is_sparse(const ModelConfig& c) {
  return c.attention == "fibonacci" || c.attention == "power_of_two";
}

}  // namespace

CausalSelfAttentionImpl::CausalSelfAttentionImpl(const ModelConfig& config, int64_t layer)
    : config_(config), head_dim_(config.d_model / config.heads) {
  qkv_ = register_module(
      "qkv",
      torch::nn::Linear(torch::nn::LinearOptions(config.d_model, 3 * config.d_model).bias(false)));
  proj_ = register_module(
      "proj",
      torch::nn::Linear(torch::nn::LinearOptions(config.d_model, config.d_model).bias(false)));
  if (is_sparse(config)) {
    if (config.reach < config.window) {
      throw std::invalid_argument("model.reach (" + std::to_string(config.reach) +
                                  ") must be resolved and >= model.window");
    }
    const pattern::ScheduleSpec schedule{pattern::parse_alpha_schedule(config.schedule),
                                         config.layers, config.alpha, config.alpha_min,
                                         config.alpha_max};
    static_alpha_ = pattern::layer_alphas(schedule)[static_cast<size_t>(layer)];
    if (schedule.kind == pattern::AlphaSchedule::learned) {
      theta_ = register_parameter("theta",
                                  torch::tensor(inverse_softplus(static_alpha_), torch::kFloat64));
    } else {
      const auto ints = integer_offsets();
      offsets_ = torch::tensor(std::vector<double>(ints.begin(), ints.end()), torch::kFloat64);
    }
  }
  if (!offsets_.defined()) offsets_ = torch::empty({0}, torch::kFloat64);
  alibi_slopes_ = position_slopes(config);
  const int64_t h = config.heads;
  if (config.normalizer == "entmax" || config.normalizer == "asentmax") {
    entmax_alpha_ = torch::full({h}, config.entmax_alpha, torch::kFloat64);
  }
  if (config.normalizer == "asentmax") {
    // Starts as plain entmax (c = 1); training moves beta and gamma.
    delta_ = register_parameter("delta", torch::ones({h}));
    beta_ = register_parameter("beta", torch::zeros({h}));
    gamma_ = register_parameter("gamma", torch::ones({h}));
  } else if (config.normalizer == "ssmax") {
    // c = beta * log(n + 1); beta starts near 1 / log(65), i.e. c ~ 1 at 64 keys.
    delta_ = torch::zeros({h});
    beta_ = register_parameter("beta", torch::full({h}, 0.25));
    gamma_ = torch::ones({h});
  }
}

double CausalSelfAttentionImpl::alpha() const {
  if (theta_.defined()) return torch::softplus(theta_.detach()).item<double>();
  return static_alpha_;
}

std::vector<int64_t> CausalSelfAttentionImpl::integer_offsets() const {
  if (!is_sparse(config_)) return {};
  return pattern::integer_offsets(
      {pattern::parse_offset_base(config_.attention), alpha(), config_.window, config_.reach});
}

torch::Tensor CausalSelfAttentionImpl::attend(const torch::Tensor& q, const torch::Tensor& k,
                                              const torch::Tensor& v) {
  const bool dense = config_.attention == "dense";
  if (config_.normalizer != "softmax" || (alibi_slopes_.defined() && !dense)) {
    return normalizer_op(q, k, v);
  }
  if (dense) return dense_softmax(q, k, v);
  if (theta_.defined()) {
    const auto alpha_value = std::exchange(next_alpha_value_, std::nullopt);
    return ops::dilated_attention_learned(
        q, k, v, torch::softplus(theta_), pattern::parse_offset_base(config_.attention),
        config_.window, config_.reach,
        alpha_value ? c10::optional<double>(*alpha_value) : c10::nullopt);
  }
  return ops::dilated_attention(q, k, v, config_.window, offsets_);
}

torch::Tensor CausalSelfAttentionImpl::normalizer_op(const torch::Tensor& q, const torch::Tensor& k,
                                                     const torch::Tensor& v) {
  // Dense causal attention is the window that covers every key.
  const int64_t window = config_.attention == "dense" ? q.size(2) : config_.window;
  auto optional = [](const torch::Tensor& t) {
    return t.defined() ? c10::optional<torch::Tensor>(t) : c10::nullopt;
  };
  torch::Tensor delta = delta_, beta = beta_;
  if (delta.defined() && config_.positions == "nape") {
    // As in the authors' code, NAPE scales only its NoPE heads: the ALiBi heads get c = 1.
    const auto nope = (alibi_slopes_ == 0).to(delta.dtype());
    delta = delta * nope + (1 - nope);
    beta = beta * nope;
  }
  return ops::entmax_attention(q, k, v, window, offsets_, optional(entmax_alpha_), optional(delta),
                               optional(beta), optional(gamma_),
                               config_.normalizer == "ssmax" || config_.normalizer == "softmax",
                               c10::nullopt, optional(alibi_slopes_));
}

torch::Tensor CausalSelfAttentionImpl::dense_softmax(const torch::Tensor& q, const torch::Tensor& k,
                                                     const torch::Tensor& v) {
#if TORCH_VERSION_MAJOR >= 2
  // On a GPU, dense causal softmax is LibTorch's fused scaled_dot_product_attention
  // (FlashAttention for bf16); an ALiBi / NAPE bias takes the explicit path below.
  if (q.is_cuda() && !alibi_slopes_.defined()) {
    return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
  }
#endif
  const int64_t t = q.size(2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  // Queries [start, start + len) against keys [0, start + len).
  auto block = [&](int64_t start, int64_t len) {
    const int64_t keys = start + len;
    auto qb = q.narrow(2, start, len), kb = k.narrow(2, 0, keys), vb = v.narrow(2, 0, keys);
    auto scores = torch::matmul(qb, kb.transpose(-2, -1)) * scale;
    const auto index = torch::TensorOptions().dtype(torch::kLong).device(q.device());
    auto i = torch::arange(start, keys, index).unsqueeze(1);
    auto j = torch::arange(keys, index).unsqueeze(0);
    auto distance = i - j;  // [len, keys]
    if (alibi_slopes_.defined()) {
      auto bias =
          alibi_slopes_.to(q.options()).view({1, -1, 1, 1}) * distance.clamp_min(0).to(q.options());
      scores = scores - bias;
    }
    scores = scores.masked_fill(distance < 0, -std::numeric_limits<float>::infinity());
    return torch::matmul(torch::softmax(scores, -1), vb);
  };
  constexpr int64_t kEvalBlock = 1024;
  if (torch::GradMode::is_enabled() || t <= kEvalBlock) return block(0, t);
  std::vector<torch::Tensor> parts;
  for (int64_t start = 0; start < t; start += kEvalBlock) {
    parts.push_back(block(start, std::min(kEvalBlock, t - start)));
  }
  return torch::cat(parts, 2);
}

std::pair<torch::Tensor, torch::Tensor> CausalSelfAttentionImpl::rope_tables(
    int64_t t, const torch::TensorOptions& options) {
  if (!rope_cos_.defined() || rope_cos_.size(0) != t || rope_cos_.device() != options.device() ||
      rope_cos_.scalar_type() != options.dtype().toScalarType()) {
    // Angles in float32 (float64 for float64 inputs) whatever the compute dtype: in bf16 an
    // angle near position 1,000 is off by up to 2 radians (its spacing there is 4).
    const auto exact = options.dtype(
        options.dtype().toScalarType() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32);
    const int64_t half = head_dim_ / 2;
    auto inv_freq =
        torch::pow(config_.rope_base, -torch::arange(0, half, exact) / static_cast<double>(half));
    auto angles = torch::outer(torch::arange(t, exact), inv_freq);  // [T, half]
    rope_cos_ = angles.cos().to(options.dtype());
    rope_sin_ = angles.sin().to(options.dtype());
  }
  return {rope_cos_, rope_sin_};
}

torch::Tensor CausalSelfAttentionImpl::forward(const torch::Tensor& x) {
  const int64_t b = x.size(0), t = x.size(1);
  auto qkv = qkv_(x).view({b, t, 3, config_.heads, head_dim_}).permute({2, 0, 3, 1, 4});
  // unbind, not qkv[0], qkv[1], qkv[2]: its backward stacks the three gradients once, where
  // each index's would write a zero-filled gradient of all of qkv and then sum the three.
  const auto parts = qkv.unbind(0);
  auto q = parts[0], k = parts[1], v = parts[2];
  if (config_.positions == "rope") {
    const auto [cos, sin] = rope_tables(t, q.options());
    q = apply_rope(q, cos, sin);
    k = apply_rope(k, cos, sin);
  }
  auto y = attend(q.contiguous(), k.contiguous(), v.contiguous());  // [B, H, T, hd]
  return proj_(y.transpose(1, 2).reshape({b, t, config_.d_model}));
}

BlockImpl::BlockImpl(const ModelConfig& config, int64_t layer) {
  ln1_ =
      register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.d_model})));
  attn = register_module("attn", CausalSelfAttention(config, layer));
  ln2_ =
      register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.d_model})));
  fc_ = register_module("fc", torch::nn::Linear(config.d_model, config.mlp_ratio * config.d_model));
  out_ =
      register_module("out", torch::nn::Linear(config.mlp_ratio * config.d_model, config.d_model));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x) {
  auto h = x + attn(ln1_(x));
  return h + out_(torch::gelu(fc_(ln2_(h))));
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
        name.ends_with("attn.gamma")) {
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

torch::Tensor GptImpl::forward(const torch::Tensor& tokens) {
  TORCH_CHECK(tokens.dim() == 2, "model input must be [batch, seq_len] token ids");
  TORCH_CHECK(tokens.scalar_type() == torch::kLong || tokens.scalar_type() == torch::kInt,
              "model input must be integer token ids (int64 or int32), got ", tokens.scalar_type());
  // Learned schedules: every layer's alpha in one read from the device (each layer needs its
  // value on the host to build its offsets; one read per layer would stall the GPU each time).
  std::vector<torch::Tensor> thetas;
  for (auto& block : blocks) {
    if (block->attn->learned_theta().defined()) thetas.push_back(block->attn->learned_theta());
  }
  if (!thetas.empty()) {
    torch::NoGradGuard no_grad;
    const auto alphas = torch::softplus(torch::stack(thetas)).to(torch::kCPU, torch::kFloat64);
    size_t next = 0;
    for (auto& block : blocks) {
      if (block->attn->learned_theta().defined()) {
        block->attn->use_alpha_value_once(alphas[static_cast<int64_t>(next++)].item<double>());
      }
    }
  }
  auto x = wte_(tokens);
  for (auto& block : blocks) x = block(x);
  return torch::matmul(ln_f_(x), wte_->weight.t());  // tied output head
}

int64_t parameter_count(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

}  // namespace reach::model
