#include "model/attention/entmax.hpp"

#include "model/attention/cached_decode.hpp"
#include "model/attention/layer_offsets.hpp"
#include "ops/entmax_attention.hpp"

namespace reach::model::attention {

EntmaxAttention::EntmaxAttention(const ModelConfig& config, int64_t layer)
    : AttentionLayer(config, layer), slopes_(position_slopes(config.positions, config.heads)) {
  if (is_dilated(config.attention)) {
    check_reach(config);
    alpha_ = schedule_alpha(config, layer);
    offsets_ = layer_offsets(config, alpha_);
  }
  distances_ = offsets_tensor(offsets_);
  const int64_t h = config.heads;
  if (config.normalizer == Normalizer::entmax || config.normalizer == Normalizer::asentmax) {
    entmax_alpha_ = torch::full({h}, config.entmax_alpha, torch::kFloat64);
  }
  if (config.normalizer == Normalizer::asentmax) {
    // Starts as plain entmax (c = 1); training moves beta and gamma.
    delta_ = register_parameter("delta", torch::ones({h}));
    beta_ = register_parameter("beta", torch::zeros({h}));
    gamma_ = register_parameter("gamma", torch::ones({h}));
  } else if (config.normalizer == Normalizer::ssmax) {
    // c = beta * log(n + 1); beta starts near 1 / log(65), i.e. c ~ 1 at 64 keys.
    delta_ = torch::zeros({h});
    beta_ = register_parameter("beta", torch::full({h}, 0.25));
    gamma_ = torch::ones({h});
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
  const auto [delta, beta] = scaling();
  const bool softmax =
      config().normalizer == Normalizer::ssmax || config().normalizer == Normalizer::softmax;
  return ops::entmax_attention(q, k, v, window,
                               beyond_window(within_budget(distances_, context.budget), window),
                               optional(entmax_alpha_), optional(delta), optional(beta),
                               optional(gamma_), softmax, c10::nullopt, optional(slopes_));
}

std::pair<torch::Tensor, torch::Tensor> EntmaxAttention::scaling() const {
  torch::Tensor delta = delta_, beta = beta_;
  if (delta.defined() && config().positions == Positions::nape) {
    // As in the authors' code, NAPE scales only its NoPE heads: the ALiBi heads get c = 1.
    // (The slopes live on the CPU; the mask goes where the parameters are.)
    const auto nope = (slopes_ == 0).to(delta.device(), delta.dtype());
    delta = delta * nope + (1 - nope);
    beta = beta * nope;
  }
  return {delta, beta};
}

torch::Tensor EntmaxAttention::attend_cached(const torch::Tensor& q, const LayerKvCache& cache,
                                             const ForwardContext& context) {
  if (!decode_kernel_applies(q)) return AttentionLayer::attend_cached(q, cache, context);
  const bool dense = config().attention == AttentionFamily::dense;
  ops::DecodeAttentionOptions key_set;
  key_set.window = dense ? cache.length() : config().window;
  key_set.offsets.assign(offsets_.begin(), offsets_.end());
  key_set.entmax =
      config().normalizer == Normalizer::entmax || config().normalizer == Normalizer::asentmax;
  key_set.entmax_alpha = entmax_alpha_;
  const auto [delta, beta] = scaling();
  key_set.delta = delta;
  key_set.beta = beta;
  key_set.gamma = gamma_;
  key_set.alibi_slopes = slopes_;
  return decode_with_kernel(q, cache, key_set, context, /*windowed=*/!dense);
}

}  // namespace reach::model::attention
