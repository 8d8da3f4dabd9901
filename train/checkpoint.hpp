// Checkpoints: one directory per step, <out_dir>/checkpoints/step-NNNNNNNN/, holding
//   model.safetensors      weights (names = the module's parameter names; Python-readable)
//   optimizer.safetensors  AdamW moments + step counts, keyed by parameter name
//   config.toml            the full run configuration
//   tokenizer.json (+ tokenizer.model)  the tokenizer, so a checkpoint is self-describing
//   state.json             step, seed, format version
// Written to a temporary directory (.tmp-step-NNNNNNNN), fsynced, then renamed into place
// (atomic on POSIX). A file named `keep` in a checkpoint directory marks it to be kept forever
// (retention, see remove_old_checkpoints, never deletes it).
#pragma once

#include <torch/torch.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "data/tokenizer/tokenizer.hpp"
#include "model/gpt.hpp"
#include "train/train_config.hpp"

namespace reach::train {

// The layout every run kind shares (model.safetensors, optimizer.safetensors, config.toml =
// config_toml, state.json), written atomically; write_extra (may be empty) adds files to the
// temporary directory first (a language model's tokenizer). Returns the directory written.
std::string save_training_checkpoint(
    const std::string& out_dir, int64_t step, const torch::nn::Module& model,
    torch::optim::AdamW& optimizer, const std::string& config_toml, uint64_t seed,
    const std::function<void(const std::string& dir)>& write_extra);

// A language model's checkpoint: the shared layout plus its tokenizer. Returns the directory.
std::string save_checkpoint(const std::string& out_dir, int64_t step, model::Gpt& model,
                            torch::optim::AdamW& optimizer, const TrainConfig& config,
                            const data::Tokenizer& tokenizer);

// Model weights alone as safetensors (names = the module's parameter names), and back:
// loading checks every name, shape and dtype and throws std::runtime_error prefixed by
// `where` on any mismatch (missing, extra or mis-shaped tensors, a corrupt file).
void save_model_weights(const std::string& path, const torch::nn::Module& model);
void load_model_weights(const std::string& path, torch::nn::Module& model,
                        const std::string& where);

// The step-* directory under out_dir/checkpoints with the highest step, if any (not checked
// for being loadable: see newest_valid_checkpoint).
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

// The step recorded in a checkpoint's state.json; throws std::runtime_error naming the
// directory when it is missing or corrupt.
int64_t read_checkpoint_step(const std::string& dir);

// Throws std::runtime_error naming the directory unless its optimizer.safetensors parses.
void check_optimizer_state(const std::string& dir);

// The newest step-* directory under out_dir/checkpoints for which `load` does not throw ("" when
// none does); the newer ones passed over are appended to `skipped`, newest first, each as
// "DIR: what load threw".
std::string newest_loadable_checkpoint(const std::string& out_dir,
                                       const std::function<void(const std::string& dir)>& load,
                                       std::vector<std::string>& skipped,
                                       std::vector<std::string>* skipped_dirs = nullptr);

// Deletes checkpoint directories that do not load (renamed to .tmp-* first, so a kill leaves
// nothing that reads as a checkpoint): a resume from an older one recomputes their steps.
void remove_unloadable_checkpoints(const std::vector<std::string>& dirs);

// A checkpoint picked from a run directory, loaded: `dir` is the one chosen (empty when none
// loads), `skipped` the newer step-* directories passed over, newest first, each as
// "DIR: why it does not load" (an empty stray directory, a corrupt file).
struct CheckpointChoice {
  std::string dir;
  Checkpoint checkpoint;
  std::vector<std::string> skipped;
  std::vector<std::string> skipped_dirs;  // the directories alone
};

// The newest checkpoint under out_dir/checkpoints that loads completely (state, config,
// tokenizer, weights and optimizer state), falling back past newer ones that do not.
CheckpointChoice newest_valid_checkpoint(const std::string& out_dir);

// What `reach eval PATH` loads: PATH itself when it is a checkpoint directory (holds
// state.json), else the newest valid checkpoint of the run directory PATH. Throws
// std::runtime_error naming PATH (and why each candidate was skipped) when nothing loads.
CheckpointChoice choose_checkpoint(const std::string& path);

// Removes partial .tmp-step-* directories (a checkpoint write cut short by a kill or a full
// disk); returns the paths removed.
std::vector<std::string> remove_partial_checkpoints(const std::string& out_dir);

// Keeps the newest `keep` step-* directories and every one holding a `keep` file, removes the
// rest (oldest first); returns the paths removed.
std::vector<std::string> remove_old_checkpoints(const std::string& out_dir, int64_t keep);

}  // namespace reach::train
