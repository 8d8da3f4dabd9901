// Training run configuration: TOML file plus `--set section.key=value` overrides.
// Every key is known and typed; an unknown key or a wrong type is a one-line error naming it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/model_config.hpp"
#include "train/optimizer_config.hpp"

namespace reach::train {

// The optimiser keys (lr, min_lr, warmup, weight_decay, grad_clip) are OptimizerConfig's.
struct TrainConfig : OptimizerConfig {
  std::string out_dir = "runs/default";
  uint64_t seed = 1;
  int threads = 0;  // 0 = all cores

  std::string corpus = "kjv";
  std::string tokenizer = "byte";  // "byte" or a directory from `reach tokenizer train`
  std::string cache_dir;           // token cache ("" = $REACH_CACHE_DIR or ~/.cache/reach)
  int64_t seq_len = 256;
  int64_t batch = 16;
  // Held-out split of your own files (docs/data.md): this fraction of the bytes, or exactly
  // the documents named in heldout_files (comma-separated; any corpus). kjv and linux have a
  // fixed split by document name.
  double heldout_fraction = 0.1;
  std::string heldout_files;

  std::string preset = "tiny";                       // applied before any model.* key
  model::ModelConfig model = model::preset("tiny");  // vocab_size 0 = the tokenizer's

  int64_t steps = 1000;
  int64_t log_every = 10;
  int64_t eval_every = 250;
  // Held-out tokens per evaluation; 0 (the default) = max(16384, seq_len), resolved when
  // parsing. A value set must be >= seq_len (one window).
  int64_t eval_tokens = 0;
  int64_t checkpoint_every = 250;
  // Checkpoints kept: the newest keep_checkpoints, plus any whose directory holds a file named
  // `keep` (touch checkpoints/step-NNNNNNNN/keep to keep one forever).
  int64_t keep_checkpoints = 3;

  // Where and how the model trains. device: "auto" (the first CUDA GPU when this LibTorch has
  // one, else the CPU), "cpu", "cuda" or "cuda:N". precision: "auto" (bf16 on CUDA, fp32 on the
  // CPU), "fp32", or "bf16" (CUDA only: bf16 autocast over fp32 weights and AdamW state).
  std::string device = "auto";
  std::string precision = "auto";
  // Peak FLOP/s of the device in TFLOP/s for the model FLOPs utilisation (MFU); 0 = from the
  // GPU's name (H100/H200 SXM bf16: 989), no MFU where unknown (the CPU).
  double peak_tflops = 0;
  // > 0: after a warm-up, time this many steps phase by phase (data, forward, backward,
  // optimizer; synchronizing the device between phases) and print the breakdown.
  int64_t profile_steps = 0;
  // "auto": on CUDA, the training step captured in a CUDA graph at its second step and replayed
  // (train/captured_step.hpp; the log says why not when a model or run cannot be captured);
  // "off": every kernel launched from the host.
  std::string cuda_graph = "auto";
  // Rows of logits per chunk of the training loss (train/loss_chunk_rows.hpp): 0 = the full
  // logits, -1 = auto (chunked on CUDA when the vocabulary is >= 4096, else full logits).
  int64_t loss_chunk_rows = -1;
};

// Parses TOML text (empty for defaults) then applies "key=value" overrides, validates, and
// resolves model.reach = 0 to seq_len and train.eval_tokens = 0 to max(16384, seq_len).
// Throws std::invalid_argument naming the key.
TrainConfig parse_train_config(const std::string& toml_text,
                               const std::vector<std::string>& overrides);
TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides);

// TOML text that parse_train_config reads back to the same config (saved in checkpoints).
std::string to_toml(const TrainConfig& config);

// Every key with its default, help and valid values (`reach train --help`).
std::string train_config_help();

}  // namespace reach::train
