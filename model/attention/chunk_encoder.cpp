#include "model/attention/chunk_encoder.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

namespace reach::model::attention {

namespace F = torch::nn::functional;

ChunkEncoderLayerImpl::ChunkEncoderLayerImpl(const ModelConfig& c) : heads_(c.heads) {
  const int64_t d = c.d_model, hidden = c.chunk_encoder_mlp_ratio * c.d_model;
  ln1_ = register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
  qkv_ = register_module("qkv", torch::nn::Linear(torch::nn::LinearOptions(d, 3 * d).bias(false)));
  proj_ = register_module("proj", torch::nn::Linear(torch::nn::LinearOptions(d, d).bias(false)));
  ln2_ = register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
  fc_ = register_module("fc", torch::nn::Linear(d, hidden));
  out_ = register_module("out", torch::nn::Linear(hidden, d));
}

torch::Tensor ChunkEncoderLayerImpl::forward(const torch::Tensor& h, const torch::Tensor& cos,
                                             const torch::Tensor& sin) {
  const int64_t n = h.size(0), len = h.size(1), d = h.size(2), hd = d / heads_;
  const auto parts = qkv_(ln1_(h)).view({n, len, 3, heads_, hd}).permute({2, 0, 3, 1, 4}).unbind(0);
  const auto q = apply_rope(parts[0], cos, sin), k = apply_rope(parts[1], cos, sin);
  // Every token of the chunk sees every other (the chunk is wholly past when it is read).
  const auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(hd));
  const auto y = torch::matmul(torch::softmax(scores, -1), parts[2]);
  const auto a = h + proj_(y.transpose(1, 2).reshape({n, len, d}));
  return a + out_(torch::gelu(fc_(ln2_(a))));
}

ChunkEncoderImpl::ChunkEncoderImpl(const ModelConfig& c)
    : config_(c), head_dim_(c.d_model / c.heads), rope_(c.d_model / c.heads, c.rope_base) {
  const int64_t d = c.d_model;
  if (c.chunk_encoder_layers > 0 && c.chunk_landmark == ChunkLandmark::cls) {
    cls_ = register_parameter("cls", torch::randn({d}) * 0.02);
  }
  layers_ = register_module("layers", torch::nn::ModuleList());
  for (int64_t l = 0; l < c.chunk_encoder_layers; ++l) layers_->push_back(ChunkEncoderLayer(c));
  ln_f_ = register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
  kv_ = register_module("kv", torch::nn::Linear(torch::nn::LinearOptions(d, 2 * d).bias(false)));
  if (c.chunk_landmark != ChunkLandmark::mean_keys) {
    landmark_ =
        register_module("landmark", torch::nn::Linear(torch::nn::LinearOptions(d, d).bias(false)));
  }
}

ChunkMemory ChunkEncoderImpl::forward(const torch::Tensor& x) {
  const int64_t b = x.size(0), t = x.size(1), d = x.size(2), s = config_.chunk_size;
  if (t % s != 0 || t == 0) {
    throw std::logic_error("chunk encoder: input of " + std::to_string(t) +
                           " tokens is not a positive multiple of the chunk size " +
                           std::to_string(s));
  }
  const int64_t chunks = t / s, heads = config_.heads;
  auto h = x.reshape({b * chunks, s, d});
  if (cls_.defined()) {
    h = torch::cat({h, cls_.to(h.dtype()).view({1, 1, d}).expand({b * chunks, 1, d})}, 1);
  }
  if (!layers_->is_empty()) {
    const auto [cos, sin] = rope_.get(0, h.size(1), h.options());
    for (const auto& layer : *layers_) h = layer->as<ChunkEncoderLayer>()->forward(h, cos, sin);
  }
  h = ln_f_(h);
  const auto tokens = h.narrow(1, 0, s);  // [N, S, D]
  const auto kv = kv_(tokens).view({b, chunks * s, 2, heads, head_dim_}).permute({2, 0, 3, 1, 4});
  const auto unit = [](const torch::Tensor& y) {
    return F::normalize(y, F::NormalizeFuncOptions().dim(-1));
  };
  if (config_.chunk_landmark == ChunkLandmark::mean_keys) {
    // Each head's landmark is the mean of the chunk's keys in that head; MoBA scores the plain
    // mean (its gate), the retrieval query the unit-normalised one (as every other landmark).
    const auto mean = kv[0].reshape({b, heads, chunks, s, head_dim_}).mean(3);
    return {kv[0], kv[1], config_.chunk_scoring == ChunkScoring::moba ? mean : unit(mean)};
  }
  const auto summary = cls_.defined() ? h.select(1, s) : tokens.mean(1);  // [N, D]
  const auto landmarks =
      unit(landmark_(summary).view({b, chunks, heads, head_dim_})).transpose(1, 2);
  return {kv[0], kv[1], landmarks};
}

}  // namespace reach::model::attention
