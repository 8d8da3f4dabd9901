// Configuration of the GPT-style decoder and its attention per layer.
#pragma once

#include <cstdint>
#include <string>

namespace reach::model {

struct ModelConfig {
  int64_t vocab_size = 256;
  int64_t layers = 4;
  int64_t d_model = 128;
  int64_t heads = 4;
  int64_t mlp_ratio = 4;
  // "dense", "window", "fibonacci" or "power_of_two".
  std::string attention = "fibonacci";
  // Alpha across depth for fibonacci / power_of_two: fixed, stagger, coprime, learned.
  std::string schedule = "stagger";
  double alpha = 1.0;      // fixed
  double alpha_min = 1.0;  // stagger / coprime / learned init
  double alpha_max = 3.0;
  int64_t window = 32;
  int64_t reach = 0;  // maximum offset R; 0 = the training sequence length
  // "rope", "alibi", "nope" or "nape" (NoPE + ALiBi: the first half of the heads NoPE, the
  // second half ALiBi with the slopes of a model with that many heads).
  std::string positions = "rope";
  double rope_base = 10000.0;
  // How scores become attention weights, over whichever key set `attention` gives:
  // "softmax"; "entmax" (alpha-entmax, alpha = entmax_alpha); "asentmax" (entmax of
  // scores times delta_h + beta_h * log(n + 1)^gamma_h, all three learned per head);
  // "ssmax" (scalable softmax: softmax of scores times beta_h * log(n + 1), beta_h learned).
  // n is the number of keys the query sees. See docs/entmax.md.
  std::string normalizer = "softmax";
  double entmax_alpha = 1.5;  // in (1, 2]
};

// Throws std::invalid_argument naming the first bad field.
void validate(const ModelConfig& config);

// Named presets: "paper" (16 layers, 512 hidden, 8 heads, W 64: the main paper's recipe; with a
// 16,384-token vocabulary it has 58.8M parameters, the paper's ~60M, which does not state its
// vocabulary), "tiny" (4 x 128, trains in minutes on 2 cores), "micro" (tests).
ModelConfig preset(const std::string& name);

}  // namespace reach::model
