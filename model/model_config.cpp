#include "model/model_config.hpp"

#include <stdexcept>

namespace reach::model {

void validate(const ModelConfig& c) {
  auto positive = [](int64_t v, const char* name) {
    if (v < 1) throw std::invalid_argument(std::string("model.") + name + " must be >= 1");
  };
  positive(c.vocab_size, "vocab_size");
  positive(c.layers, "layers");
  positive(c.d_model, "d_model");
  positive(c.heads, "heads");
  positive(c.mlp_ratio, "mlp_ratio");
  positive(c.window, "window");
  if (c.d_model % c.heads != 0) {
    throw std::invalid_argument("model.d_model (" + std::to_string(c.d_model) +
                                ") must be divisible by model.heads (" + std::to_string(c.heads) +
                                ")");
  }
  if ((c.d_model / c.heads) % 2 != 0 && c.positions == "rope") {
    throw std::invalid_argument("model: RoPE needs an even head dimension");
  }
  if (c.attention != "dense" && c.attention != "window" && c.attention != "fibonacci" &&
      c.attention != "power_of_two") {
    throw std::invalid_argument(
        "model.attention must be dense, window, fibonacci or "
        "power_of_two, got '" +
        c.attention + "'");
  }
  if (c.positions != "rope" && c.positions != "alibi" && c.positions != "nope" &&
      c.positions != "nape") {
    throw std::invalid_argument("model.positions must be rope, alibi, nope or nape, got '" +
                                c.positions + "'");
  }
  if (c.positions == "nape" && c.heads < 2) {
    throw std::invalid_argument(
        "model.positions = 'nape' needs at least 2 heads (half NoPE, "
        "half ALiBi)");
  }
  if (c.normalizer != "softmax" && c.normalizer != "entmax" && c.normalizer != "asentmax" &&
      c.normalizer != "ssmax") {
    throw std::invalid_argument(
        "model.normalizer must be softmax, entmax, asentmax or ssmax, got '" + c.normalizer + "'");
  }
  if (!(c.entmax_alpha > 1.0 && c.entmax_alpha <= 2.0)) {
    throw std::invalid_argument("model.entmax_alpha must be in (1, 2], got " +
                                std::to_string(c.entmax_alpha));
  }
  const bool bias_or_normalizer =
      c.positions == "alibi" || c.positions == "nape" || c.normalizer != "softmax";
  if (bias_or_normalizer && c.schedule == "learned" &&
      (c.attention == "fibonacci" || c.attention == "power_of_two")) {
    throw std::invalid_argument(
        "model.schedule = 'learned' (fractional offsets) works with softmax and rope/nope only; "
        "model.normalizer = '" +
        c.normalizer + "' and model.positions = '" + c.positions +
        "' need integer offsets (a static schedule)");
  }
  if (c.reach < 0) throw std::invalid_argument("model.reach must be >= 0 (0 = seq_len)");
}

ModelConfig preset(const std::string& name) {
  ModelConfig c;
  if (name == "paper") {
    c.vocab_size = 16384;  // 58.8M parameters in all: the paper's ~60M
    c.layers = 16;
    c.d_model = 512;
    c.heads = 8;
    c.window = 64;
  } else if (name == "tiny") {
    c.layers = 4;
    c.d_model = 128;
    c.heads = 4;
    c.window = 32;
  } else if (name == "micro") {
    c.layers = 2;
    c.d_model = 32;
    c.heads = 2;
    c.window = 8;
  } else {
    throw std::invalid_argument("unknown model preset '" + name +
                                "' (expected paper, tiny or micro)");
  }
  return c;
}

}  // namespace reach::model
