// The training loop: AdamW (decoupled weight decay on matrices only), linear warmup then
// cosine decay, gradient clipping, seeded and deterministic on CPU. Batches are drawn by an
// RNG seeded from (seed, step), so the data-loader state is the step itself and a resumed run
// sees exactly the batches an uninterrupted one would. SIGINT/SIGTERM save a checkpoint and
// stop cleanly.
#pragma once

#include <string>
#include <vector>

#include "data/tokenizer/token_cache.hpp"
#include "data/tokenizer/tokenizer.hpp"
#include "train/train_config.hpp"

namespace reach::train {

struct TrainResult {
  int64_t steps_done = 0;
  double last_loss = 0;
  double heldout_loss = 0;
  double tokens_per_second = 0;
  bool interrupted = false;
  std::string checkpoint;  // the last checkpoint written
};

struct TrainOptions {
  bool resume = false;
  bool quiet = false;           // no progress lines
  int64_t stop_after_step = 0;  // for tests: stop (without a final checkpoint) after this step
};

TrainResult run_training(const TrainConfig& config, const TrainOptions& options);

// The corpus tokenized (through the on-disk token cache) by a tokenizer.
struct TokenData {
  std::unique_ptr<data::Tokenizer> tokenizer;
  data::TokenizedCorpus tokens;
  std::vector<std::vector<int64_t>> heldout;  // held-out documents, for evaluation
};
// tokenizer_spec: "byte" or a tokenizer directory (a checkpoint directory works too).
TokenData load_token_data(const std::string& corpus, const data::SplitOptions& split,
                          const std::string& tokenizer_spec, const std::string& cache_dir);

// What to change when the held-out part is too short for evaluation at data.seq_len.
std::string heldout_remedy(const TrainConfig& config);

}  // namespace reach::train
