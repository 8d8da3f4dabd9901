// Configuration of a synthetic-task run (`reach tasks train`): which task and its
// parameters, the model, training at a short length, and the lengths to evaluate at.
// TOML with [run], [task], [model], [train], [eval] sections plus `--set key=value`
// overrides; every key is known and typed, and a bad one is an error naming it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/tasks/synthetic_task.hpp"
#include "model/model_config.hpp"
#include "train/optimizer_config.hpp"

namespace reach::train {

// The optimiser keys (lr, min_lr, warmup, weight_decay, grad_clip) are OptimizerConfig's;
// tasks train without weight decay by default.
struct TaskRunConfig : OptimizerConfig {
  TaskRunConfig() { weight_decay = 0.0; }

  std::string out_dir = "runs/task";
  uint64_t seed = 1;
  int threads = 0;  // 0 = all cores

  // "max_retrieval", "associative_recall" (alias "mqar"), "passkey", "needle" or
  // "variable_tracking", with the parameters of data/tasks/synthetic_task.hpp,
  // needle_task.hpp and variable_tracking_task.hpp (each used by the tasks that have it).
  std::string task = "max_retrieval";
  int64_t num_values = 64;      // max_retrieval
  int64_t items = 16;           // max_retrieval
  int64_t filler_tokens = 1;    // max_retrieval: distinct filler tokens
  int64_t alphabet = 256;       // associative_recall: symbols spelling keys and values
  int64_t vocabulary = 10000;   // associative_recall: distinct keys (and values)
  int64_t queries = 4;          // associative_recall, needle: keys asked
  int64_t tokens_per_item = 2;  // associative_recall: key / value length
  double kv_fraction = 0.8;     // associative_recall: share of the context in bindings
  int64_t digits = 5;           // passkey, needle, variable_tracking: digits of the value
  double depth = -1.0;          // passkey: < 0 random
  int64_t needles = 4;          // needle: needles inserted
  int64_t chains = 2;           // variable_tracking: chains (one query each)
  int64_t hops = 2;             // variable_tracking: assignments after the first, per chain
  std::string corpus = "kjv";   // needle, variable_tracking: filler text (kjv, file or folder)

  std::string preset = "micro";  // applied before any model.* key; vocab = the task's
  model::ModelConfig model = model::preset("micro");

  int64_t train_length = 64;
  // > 0: each step draws its length uniformly from [train_min_length, train_length] (one
  // length per batch; seed 003 trains at 48 +- 16); 0: every step at train_length.
  int64_t train_min_length = 0;
  // "" or where the model's starting weights come from: a finished task run, one of its
  // checkpoints (checkpoints/step-N) or a model.safetensors file; the next stage of a
  // curriculum (another length, task size or step count) with a fresh optimizer. The model
  // config must match the weights'.
  std::string init_from;
  int64_t batch = 32;
  int64_t steps = 1000;
  int64_t log_every = 50;
  int64_t checkpoint_every = 250;
  int64_t keep_checkpoints = 3;  // the newest; plus any holding a file named `keep`
  int64_t profile_steps = 0;     // > 0: phase times of that many steps (as in `reach train`)
  int64_t loss_chunk_rows = -1;  // as in `reach train` (train/loss_chunk_rows.hpp)
  // As in `reach train`: auto (a CUDA GPU when there is one) | cpu | cuda | cuda:N, and
  // auto (bf16 autocast on CUDA) | fp32 | bf16.
  std::string device = "auto";
  std::string precision = "auto";

  // Evaluation lengths as multiples of train_length ("1,4,16,64,256"); lengths above
  // max_length are skipped (and reported as skipped).
  std::string multipliers = "1,4,16,64,256";
  int64_t examples = 64;  // per length
  int64_t eval_batch = 8;
  int64_t max_length = 16384;
};

// Parses TOML text (empty for defaults), applies overrides, sets model.vocab_size from the
// task, resolves model.reach = 0 to train_length, and validates. Throws
// std::invalid_argument naming the key.
TaskRunConfig parse_task_config(const std::string& toml_text,
                                const std::vector<std::string>& overrides);
TaskRunConfig load_task_config(const std::string& path, const std::vector<std::string>& overrides);

// TOML text that parse_task_config reads back to the same config (saved with the run).
std::string to_toml(const TaskRunConfig& config);

// Every key with its default, help and valid values (`reach tasks train --help`).
std::string task_config_help();

std::unique_ptr<data::tasks::SyntheticTask> make_task(const TaskRunConfig& config);

// The evaluation multipliers, parsed ("1,4,16"); throws std::invalid_argument on bad input.
std::vector<int64_t> parse_multipliers(const std::string& text);

}  // namespace reach::train
