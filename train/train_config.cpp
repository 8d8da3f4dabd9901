#include "train/train_config.hpp"

#include <algorithm>
#include <stdexcept>

#include "train/config_fields.hpp"

namespace reach::train {
namespace {

ConfigFields fields(TrainConfig& c) {
  ConfigFields f = {
      {"run.out_dir", &c.out_dir},
      {"run.seed", &c.seed},
      {"run.threads", &c.threads},
      {"data.corpus", &c.corpus},
      {"data.tokenizer", &c.tokenizer},
      {"data.cache_dir", &c.cache_dir},
      {"data.seq_len", &c.seq_len},
      {"data.batch", &c.batch},
      {"train.steps", &c.steps},
      {"train.lr", &c.lr},
      {"train.min_lr", &c.min_lr},
      {"train.warmup", &c.warmup},
      {"train.weight_decay", &c.weight_decay},
      {"train.grad_clip", &c.grad_clip},
      {"train.log_every", &c.log_every},
      {"train.eval_every", &c.eval_every},
      {"train.eval_tokens", &c.eval_tokens},
      {"train.checkpoint_every", &c.checkpoint_every},
      {"train.device", &c.device},
      {"train.precision", &c.precision},
      {"train.peak_tflops", &c.peak_tflops},
      {"train.profile_steps", &c.profile_steps},
  };
  add_model_fields(f, c.model);
  return f;
}

void validate(const TrainConfig& c) {
  if (c.seq_len < 2) throw std::invalid_argument("data.seq_len must be >= 2");
  if (c.batch < 1) throw std::invalid_argument("data.batch must be >= 1");
  if (c.steps < 1) throw std::invalid_argument("train.steps must be >= 1");
  if (!(c.lr > 0)) throw std::invalid_argument("train.lr must be > 0");
  if (c.min_lr < 0 || c.min_lr > c.lr)
    throw std::invalid_argument("train.min_lr must be in [0, lr]");
  if (c.warmup < 0) throw std::invalid_argument("train.warmup must be >= 0");
  if (c.weight_decay < 0) throw std::invalid_argument("train.weight_decay must be >= 0");
  if (!(c.grad_clip > 0)) throw std::invalid_argument("train.grad_clip must be > 0");
  if (c.log_every < 1 || c.eval_every < 1 || c.checkpoint_every < 1) {
    throw std::invalid_argument("train.log_every, eval_every and checkpoint_every must be >= 1");
  }
  if (c.eval_tokens < c.seq_len)
    throw std::invalid_argument("train.eval_tokens must be >= seq_len");
  if (c.threads < 0) throw std::invalid_argument("run.threads must be >= 0");
  const bool cuda_index = c.device.starts_with("cuda:") && c.device.size() > 5 &&
                          c.device.find_first_not_of("0123456789", 5) == std::string::npos;
  if (c.device != "auto" && c.device != "cpu" && c.device != "cuda" && !cuda_index) {
    throw std::invalid_argument("train.device must be auto, cpu, cuda or cuda:N, got '" + c.device +
                                "'");
  }
  if (c.precision != "auto" && c.precision != "fp32" && c.precision != "bf16") {
    throw std::invalid_argument("train.precision must be auto, fp32 or bf16, got '" + c.precision +
                                "'");
  }
  if (c.precision == "bf16" && c.device == "cpu") {
    throw std::invalid_argument(
        "train.precision = 'bf16' needs a CUDA device (train.device = cuda or auto); the CPU "
        "trains in fp32");
  }
  if (!(c.peak_tflops >= 0)) throw std::invalid_argument("train.peak_tflops must be >= 0");
  if (c.profile_steps < 0) throw std::invalid_argument("train.profile_steps must be >= 0");
  if (c.model.vocab_size < 0) throw std::invalid_argument("model.vocab_size must be >= 0");
  auto resolved = c.model;
  if (resolved.vocab_size == 0) resolved.vocab_size = 1;  // resolved from the tokenizer later
  model::validate(resolved);
}

}  // namespace

TrainConfig parse_train_config(const std::string& toml_text,
                               const std::vector<std::string>& overrides) {
  TrainConfig config;
  apply_config(toml_text, overrides, [&](const std::optional<std::string>& preset) {
    if (preset) config.preset = *preset;
    config.model = model::preset(config.preset);
    config.model.vocab_size = 0;
    return fields(config);
  });
  validate(config);
  if (config.model.reach == 0) config.model.reach = std::max(config.seq_len, config.model.window);
  return config;
}

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  return parse_train_config(read_config_file(path), overrides);
}

std::string to_toml(const TrainConfig& config) {
  TrainConfig copy = config;
  return fields_to_toml(fields(copy), copy.preset);
}

}  // namespace reach::train
