#include "model/attention/entmax.hpp"

#include <cmath>

#include "model/attention/cached_decode.hpp"
#include "model/attention/layer_offsets.hpp"
#include "ops/entmax_attention.hpp"

namespace reach::model::attention {

EntmaxAttention::EntmaxAttention(const ModelConfig& config, int64_t layer)
    : AttentionLayer(config, layer), slopes_(position_slopes(config.positions, config.heads)) {
  if (slopes_.defined()) nope_heads_ = DeviceConstant((slopes_.cpu() == 0).to(torch::kFloat32));
  if (is_dilated(config.attention)) {
    check_reach(config);
    alpha_ = schedule_alpha(config, layer);
    offsets_ = layer_offsets(config, alpha_);
  }
  distances_ = offsets_tensor(offsets_);
  const int64_t h = config.heads;
  if (config.normalizer == Normalizer::entmax || config.normalizer == Normalizer::asentmax) {
    entmax_alpha_ = DeviceConstant(torch::full({h}, config.entmax_alpha, torch::kFloat64));
    if (config.entmax_alpha_mode == EntmaxAlpha::learned) {
      // alpha = 1 + sigmoid(theta) stays in (1, 2); theta starts at alpha = entmax_alpha.
      const double start = config.entmax_alpha - 1.0;
      alpha_logit_ =
          register_parameter("alpha_logit", torch::full({h}, std::log(start / (1.0 - start))));
    }
  }
  if (config.normalizer == Normalizer::asentmax && config.entmax_scale == EntmaxScale::per_query) {
    // Zero weights: every query starts at beta = softplus(b) = 0.1, gamma = 0, i.e.
    // c = delta + 0.1 (close to plain entmax); training makes them depend on h_i.
    delta_ = register_parameter("delta", torch::ones({h}));
    scale_beta_ = register_module("scale_beta", torch::nn::Linear(config.d_model, h));
    scale_gamma_ = register_module("scale_gamma", torch::nn::Linear(config.d_model, h));
    torch::NoGradGuard no_grad;
    scale_beta_->weight.zero_();
    scale_beta_->bias.fill_(std::log(std::expm1(0.1)));
    scale_gamma_->weight.zero_();
    scale_gamma_->bias.zero_();
  } else if (config.normalizer == Normalizer::asentmax) {
    // Starts as plain entmax (c = 1); training moves beta and gamma.
    delta_ = register_parameter("delta", torch::ones({h}));
    beta_ = register_parameter("beta", torch::zeros({h}));
    gamma_ = register_parameter("gamma", torch::ones({h}));
  } else if (config.normalizer == Normalizer::ssmax) {
    // c = beta * log(n + 1); beta starts near 1 / log(65), i.e. c ~ 1 at 64 keys.
    ssmax_delta_ = DeviceConstant(torch::zeros({h}));
    beta_ = register_parameter("beta", torch::full({h}, 0.25));
    ssmax_gamma_ = DeviceConstant(torch::ones({h}));
  }
}

torch::Tensor EntmaxAttention::attend(const torch::Tensor& q, const torch::Tensor& k,
                                      const torch::Tensor& v, const ForwardContext& context) {
  // Dense causal attention is the window that covers every key.
  const int64_t window = config().attention == AttentionFamily::dense
                             ? q.size(2)
                             : budget_window(config().window, context.budget);
  auto optional = [](const torch::Tensor& t) {
    return t.defined() ? c10::optional<torch::Tensor>(t) : c10::nullopt;
  };
  const auto s = scaling(q.size(2), q.device());
  const bool softmax =
      config().normalizer == Normalizer::ssmax || config().normalizer == Normalizer::softmax;
  return ops::entmax_attention(
      q, k, v, window, beyond_window(within_budget(distances_, context.budget), window),
      optional(alphas(q.device())), optional(s.delta), optional(s.beta), optional(s.gamma), softmax,
      c10::nullopt, optional(slopes_.on(q.device())));
}

AttentionOutput EntmaxAttention::compute(const torch::Tensor& x, ForwardContext& context) {
  if (scale_beta_) {
    // [B, T, D] -> [B, H, T]; float32 whatever autocast made of the projections.
    query_beta_ =
        torch::nn::functional::softplus(scale_beta_(x).to(torch::kFloat32)).permute({0, 2, 1});
    query_gamma_ = (2.0 * torch::tanh(scale_gamma_(x).to(torch::kFloat32))).permute({0, 2, 1});
  }
  return AttentionLayer::compute(x, context);
}

torch::Tensor EntmaxAttention::alphas(const torch::Device& device) const {
  if (!alpha_logit_.defined()) return entmax_alpha_.on(device);
  return (1.0 + torch::sigmoid(alpha_logit_)).to(torch::kFloat64);
}

EntmaxAttention::Scaling EntmaxAttention::scaling(int64_t queries,
                                                  const torch::Device& device) const {
  Scaling s{delta_, beta_, gamma_};
  if (ssmax_delta_.defined()) {
    s.delta = ssmax_delta_.on(device);
    s.gamma = ssmax_gamma_.on(device);
  }
  if (scale_beta_) {
    s.beta = query_beta_;
    s.gamma = query_gamma_;
    const int64_t t = s.beta.size(2);
    if (t < queries) {  // a decode call: only the last t queries' outputs are kept
      s.beta = torch::nn::functional::pad(s.beta,
                                          torch::nn::functional::PadFuncOptions({queries - t, 0}));
      s.gamma = torch::nn::functional::pad(s.gamma,
                                           torch::nn::functional::PadFuncOptions({queries - t, 0}));
    }
  }
  if (s.delta.defined() && config().positions == Positions::nape) {
    // As in the authors' code, NAPE scales only its NoPE heads: the ALiBi heads get c = 1.
    const auto nope = nope_heads_.on(device).to(s.delta.dtype());
    s.delta = s.delta * nope + (1 - nope);
    s.beta = s.beta.dim() == 3 ? s.beta * nope.view({1, -1, 1}) : s.beta * nope;
  }
  return s;
}

torch::Tensor EntmaxAttention::attend_cached(const torch::Tensor& q, const LayerKvCache& cache,
                                             const ForwardContext& context) {
  const bool entmax =
      config().normalizer == Normalizer::entmax || config().normalizer == Normalizer::asentmax;
  if (!decode_kernel_applies(q, context, entmax) || scale_beta_) {
    return AttentionLayer::attend_cached(q, cache, context);
  }
  const bool dense = config().attention == AttentionFamily::dense;
  ops::DecodeAttentionOptions key_set;
  key_set.window = dense ? cache.length() : config().window;
  key_set.offsets.assign(offsets_.begin(), offsets_.end());
  key_set.entmax = entmax;
  // The decode op reads per-head values on the host: a fixed alpha stays there.
  key_set.entmax_alpha = alphas(torch::Device(torch::kCPU));
  const auto s = scaling(q.size(2), q.device());
  key_set.delta = s.delta;
  key_set.beta = s.beta;
  key_set.gamma = s.gamma;
  key_set.alibi_slopes = slopes_.cpu();
  return decode_with_kernel(q, cache, key_set, context, /*windowed=*/!dense);
}

}  // namespace reach::model::attention
