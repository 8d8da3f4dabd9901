// Checkpoints: one directory per step, <out_dir>/checkpoints/step-NNNNNNNN/, holding
//   model.safetensors      weights (names = the module's parameter names; Python-readable)
//   optimizer.safetensors  AdamW moments + step counts, keyed by parameter name
//   config.toml            the full run configuration
//   tokenizer.json (+ tokenizer.model)  the tokenizer, so a checkpoint is self-describing
//   state.json             step, seed, format version
// Written to a temporary directory, fsynced, then renamed into place (atomic on POSIX).
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>

#include "data/tokenizer/tokenizer.hpp"
#include "model/gpt.hpp"
#include "train/train_config.hpp"

namespace reach::train {

void save_checkpoint(const std::string& out_dir, int64_t step, model::Gpt& model,
                     torch::optim::AdamW& optimizer, const TrainConfig& config,
                     const data::Tokenizer& tokenizer);

// Model weights alone as safetensors (names = the module's parameter names), and back:
// loading checks every name, shape and dtype and throws std::runtime_error prefixed by
// `where` on any mismatch (missing, extra or mis-shaped tensors, a corrupt file).
void save_model_weights(const std::string& path, const torch::nn::Module& model);
void load_model_weights(const std::string& path, torch::nn::Module& model,
                        const std::string& where);

// The newest complete checkpoint directory under out_dir, if any.
std::optional<std::string> latest_checkpoint(const std::string& out_dir);

struct Checkpoint {
  TrainConfig config;
  int64_t step = 0;
  model::Gpt model{nullptr};
};

// Loads config, state and weights; throws std::runtime_error naming the file and problem
// (missing file, corrupt or foreign safetensors, missing or mis-shaped tensors).
Checkpoint load_checkpoint(const std::string& dir);
void load_optimizer_state(const std::string& dir, model::Gpt& model,
                          torch::optim::AdamW& optimizer);

}  // namespace reach::train
