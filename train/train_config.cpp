#include "train/train_config.hpp"

#include <algorithm>
#include <stdexcept>

#include "train/config_fields.hpp"

namespace reach::train {
namespace {

constexpr int64_t kDefaultEvalTokens = 16384;

void check_device(const std::string& key, const std::string& device) {
  const bool cuda_index = device.starts_with("cuda:") && device.size() > 5 &&
                          device.find_first_not_of("0123456789", 5) == std::string::npos;
  if (device != "auto" && device != "cpu" && device != "cuda" && !cuda_index) {
    throw std::invalid_argument(key + " must be auto, cpu, cuda or cuda:N, got '" + device + "'");
  }
}

ConfigKeys keys(TrainConfig& c) {
  ConfigKeys k;
  add_run_keys(k, c.out_dir, c.seed, c.threads);
  k.add("data.corpus", &c.corpus, "kjv, linux, or a path to a text file / folder of text files")
      .add("data.tokenizer", &c.tokenizer, "byte, or a directory from `reach tokenizer train`")
      .add("data.cache_dir", &c.cache_dir,
           "token cache (empty = $REACH_CACHE_DIR or ~/.cache/reach)")
      .add("data.seq_len", &c.seq_len, "training sequence length", at_least(2))
      .add("data.batch", &c.batch, "sequences per step", at_least(1))
      .add("data.heldout_fraction", &c.heldout_fraction,
           "your files: fraction of the bytes held out (kjv, linux: fixed split; docs/data.md)",
           above_up_to(0, 0.9))
      .add("data.heldout_files", &c.heldout_files,
           "comma-separated document names held out exactly (any corpus; empty = the rule)");
  add_model_keys(k, c.model);
  k.add("train.steps", &c.steps, "optimizer steps", at_least(1));
  add_optimizer_keys(k, c);
  k.add("train.log_every", &c.log_every, "steps between log lines", at_least(1))
      .add("train.eval_every", &c.eval_every, "steps between held-out evaluations", at_least(1))
      .add("train.eval_tokens", &c.eval_tokens,
           "held-out tokens per evaluation (0 = max(16384, data.seq_len))", at_least(0))
      .add("train.checkpoint_every", &c.checkpoint_every, "steps between checkpoints", at_least(1))
      .add("train.keep_checkpoints", &c.keep_checkpoints,
           "checkpoints kept: the newest N, plus any whose directory holds a file named keep",
           at_least(1))
      .add("train.device", &c.device, "where to train",
           checked_by("auto, cpu, cuda or cuda:N", check_device))
      .add("train.precision", &c.precision, "auto = bf16 autocast on CUDA, fp32 on the CPU",
           one_of({"auto", "fp32", "bf16"}))
      .add("train.peak_tflops", &c.peak_tflops,
           "device peak TFLOP/s for the MFU (0 = from the GPU's name)", at_least(0))
      .add("train.profile_steps", &c.profile_steps,
           "> 0: time this many steps phase by phase (eagerly: no CUDA graph)", at_least(0))
      .add("train.cuda_graph", &c.cuda_graph,
           "auto = on CUDA, capture the training step in a CUDA graph and replay it (the log "
           "says why when it cannot); off = launch every kernel from the host",
           one_of({"auto", "off"}))
      .add("train.loss_chunk_rows", &c.loss_chunk_rows,
           "rows of logits per chunk of the training loss (0 = full logits; -1 = auto: "
           "2^26 / vocab rows on CUDA when the vocabulary is >= 4096, else full logits)",
           at_least(-1));
  return k;
}

void validate(TrainConfig& c) {
  check_optimizer(c);
  if (c.eval_tokens == 0) c.eval_tokens = std::max(kDefaultEvalTokens, c.seq_len);
  if (c.eval_tokens < c.seq_len) {
    throw std::invalid_argument("train.eval_tokens (" + std::to_string(c.eval_tokens) +
                                ") must be >= data.seq_len (" + std::to_string(c.seq_len) +
                                "): set train.eval_tokens to at least " +
                                std::to_string(c.seq_len) + ", or 0 for max(16384, seq_len)");
  }
  if (c.precision == "bf16" && c.device == "cpu") {
    throw std::invalid_argument(
        "train.precision = 'bf16' needs a CUDA device (train.device = cuda or auto); the CPU "
        "trains in fp32");
  }
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
    return keys(config);
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
  return keys_to_toml(keys(copy), copy.preset);
}

std::string train_config_help() {
  TrainConfig defaults;
  defaults.model.vocab_size = 0;
  return keys_help(keys(defaults), defaults.preset);
}

}  // namespace reach::train
