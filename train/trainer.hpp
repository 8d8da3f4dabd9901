// `reach train`: a language model on a corpus, through the shared loop (train/loop.hpp):
// AdamW (decoupled weight decay on matrices only), linear warmup then cosine decay, gradient
// clipping, seeded and deterministic on CPU. Batches are drawn by an RNG seeded from
// (seed, step), so the data-loader state is the step itself and a resumed run sees exactly the
// batches an uninterrupted one would. SIGINT/SIGTERM save a checkpoint and stop cleanly.
//
// Data-parallel (options.world, train/world.hpp): every rank runs this with the same config; the
// global batch (data.batch rows) of a step is the one a single process would draw, and rank r
// trains on its r-th slice; gradients are averaged over the ranks in buckets overlapped with the
// backward (train/data_parallel.hpp). Rank 0 alone owns the run directory (lock, checkpoints,
// metrics.jsonl, progress lines); the others resume from the checkpoint rank 0 chose, after the
// ranks agree on world size, config and checkpoint step (train/rank_agreement.hpp). A world of
// one is the single-process path, unchanged.
//
// The run directory (run.out_dir) is locked while training; a directory that already holds a
// run (checkpoints, metrics.jsonl) is continued with `resume` or replaced with `overwrite`,
// never trained over. Checkpoints beyond the newest train.keep_checkpoints are removed, except
// those holding a file named `keep`.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "data/tokenizer/token_cache.hpp"
#include "data/tokenizer/tokenizer.hpp"
#include "train/gradient_buckets.hpp"
#include "train/train_config.hpp"
#include "train/world.hpp"

namespace reach::train {

struct TrainResult {
  int64_t steps_done = 0;
  double last_loss = 0;
  double heldout_loss = 0;
  double tokens_per_second = 0;
  bool interrupted = false;
  std::string checkpoint;  // the last checkpoint written
};

// The config keys that may differ from the checkpoint's on resume; every other key (the
// model, the data, the seed, the optimiser recipe) must match it, since the weights or the
// data stream depend on it.
inline constexpr std::array<const char*, 15> kResumeMutableKeys{"run.out_dir",
                                                                "run.threads",
                                                                "data.cache_dir",
                                                                "train.steps",
                                                                "train.log_every",
                                                                "train.eval_every",
                                                                "train.eval_tokens",
                                                                "train.checkpoint_every",
                                                                "train.keep_checkpoints",
                                                                "train.device",
                                                                "train.precision",
                                                                "train.peak_tflops",
                                                                "train.profile_steps",
                                                                "train.cuda_graph",
                                                                "train.loss_chunk_rows"};

struct TrainOptions {
  bool resume = false;          // continue from the newest valid checkpoint in run.out_dir
  bool overwrite = false;       // run.out_dir holds a run: delete it and start over
  bool quiet = false;           // no progress lines
  int64_t stop_after_step = 0;  // for tests: stop (without a final checkpoint) after this step
  // Data-parallel training (train/world.hpp): this process's rank among world.size; one
  // process by default. data.batch is the global batch, split evenly over the ranks.
  World world{};
  int64_t bucket_bytes = GradientBuckets::kDefaultBucketBytes;  // gradient all-reduce buckets
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
