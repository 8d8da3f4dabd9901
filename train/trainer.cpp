#include "train/trainer.hpp"

#include <fmt/core.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>

#include "data/corpus/corpus.hpp"
#include "eval/perplexity.hpp"
#include "model/gpt.hpp"
#include "train/checkpoint.hpp"
#include "train/cpu_threads.hpp"
#include "train/data_parallel.hpp"
#include "train/device.hpp"
#include "train/loop.hpp"
#include "train/loss_chunk_rows.hpp"
#include "train/optimizer.hpp"
#include "train/process_group.hpp"
#include "train/rank_agreement.hpp"
#include "train/run_directory.hpp"

namespace reach::train {
namespace {

// A language-model run directory: what it holds besides its lock, and how messages name it.
const RunDirectoryRules kRunRules{"run.out_dir", "[train]", {"checkpoints", "metrics.jsonl"}};

// Tokens for `step`, rows [first_row, first_row + rows) of the global batch [batch, seq_len + 1]
// (inputs and targets overlap by all but one): starts drawn from an RNG seeded by (seed, step)
// only, so a data-parallel rank takes its share of the very batch one process would draw.
// Pinned memory lets the copy to a GPU run asynchronously.
torch::Tensor batch_for_step(std::span<const uint32_t> stream, const TrainConfig& c, int64_t step,
                             int64_t first_row, int64_t rows, bool pinned) {
  std::seed_seq seq{static_cast<uint64_t>(c.seed), static_cast<uint64_t>(step)};
  std::mt19937_64 rng(seq);
  const auto limit = static_cast<int64_t>(stream.size()) - c.seq_len - 1;
  std::uniform_int_distribution<int64_t> start(0, limit);
  auto tokens = torch::empty({rows, c.seq_len + 1},
                             torch::TensorOptions().dtype(torch::kInt64).pinned_memory(pinned));
  auto* out = tokens.data_ptr<int64_t>();
  for (int64_t b = 0; b < first_row + rows; ++b) {
    const int64_t s = start(rng);
    if (b < first_row) continue;
    std::copy(stream.begin() + s, stream.begin() + s + c.seq_len + 1,
              out + (b - first_row) * (c.seq_len + 1));
  }
  return tokens;
}

}  // namespace

std::string heldout_remedy(const TrainConfig& c) {
  const bool named = c.corpus == "kjv" || c.corpus == "linux";
  return fmt::format(
      "{}name longer documents in data.heldout_files, or lower data.seq_len (now {})",
      named || !c.heldout_files.empty()
          ? ""
          : fmt::format("raise data.heldout_fraction (now {}), ", c.heldout_fraction),
      c.seq_len);
}

TokenData load_token_data(const std::string& corpus_name, const data::SplitOptions& split,
                          const std::string& tokenizer_spec, const std::string& cache_dir) {
  auto tokenizer = data::load_tokenizer(tokenizer_spec);
  const auto corpus = data::load_corpus(corpus_name, split);
  auto tokens = data::TokenizedCorpus::open_or_build(corpus, *tokenizer, cache_dir);
  std::vector<std::vector<int64_t>> heldout;
  for (const auto& doc : tokens.heldout()) heldout.emplace_back(doc.begin(), doc.end());
  return {std::move(tokenizer), std::move(tokens), std::move(heldout)};
}

TrainResult run_training(const TrainConfig& config_in, const TrainOptions& options) {
  TrainConfig c = config_in;
  if (options.resume && options.overwrite) {
    throw std::invalid_argument("--resume and --overwrite exclude each other");
  }
  set_cpu_threads(c.threads);
  const World& world = options.world;
  const bool rank0 = world.rank == 0;
  torch::Device device = resolve_device(c.device);
  if (world.distributed() && device.is_cuda()) {
    // One GPU per rank of a machine: the LOCAL_RANK-th.
    device = resolve_device(fmt::format("cuda:{}", world.local_rank));
  }
  const bool bf16 = resolve_bf16(c.precision, device);
  std::unique_ptr<ProcessGroup> group;
  if (world.distributed()) {
    if (const auto why = collectives_unavailable(device); !why.empty()) {
      throw std::invalid_argument(fmt::format("WORLD_SIZE={}: {}", world.size, why));
    }
    group = std::make_unique<ProcessGroup>(world);
  }

  // Rank 0 (or the only process) owns the run directory: one training at a time, never a new
  // run over an old one. The other ranks resume from the checkpoint rank 0 chose.
  std::unique_ptr<RunLock> lock;
  std::optional<CheckpointChoice> resume_from;
  std::optional<TokenData> corpus;
  RankStart start;
  start.rank = world.rank;
  start.world_size = world.size;
  start.resume = options.resume;
  try {
    if (rank0) {
      lock = open_run_directory(c.out_dir, kRunRules, options.resume, options.overwrite);
      if (options.resume) {
        resume_from = newest_valid_checkpoint(c.out_dir);
        report_resume_choice(c.out_dir, kRunRules, resume_from->dir, resume_from->skipped);
      }
    } else {
      const RankStart first = wait_for_rank0(*group);
      if (options.resume && !first.checkpoint.empty()) {
        resume_from = CheckpointChoice{first.checkpoint, load_checkpoint(first.checkpoint), {}, {}};
      }
    }

    corpus.emplace(load_token_data(c.corpus,
                                   data::split_options(c.heldout_fraction, c.heldout_files),
                                   c.tokenizer, c.cache_dir));
    // Held-out evaluation runs at seq_len: fail now, not after eval_every steps.
    eval::require_heldout_length(corpus->heldout, {c.seq_len}, heldout_remedy(c));
    const int64_t vocab = corpus->tokenizer->vocab_size();
    if (c.model.vocab_size != 0 && c.model.vocab_size != vocab) {
      throw std::invalid_argument(fmt::format("model.vocab_size = {} but the tokenizer '{}' has {}",
                                              c.model.vocab_size, c.tokenizer, vocab));
    }
    c.model.vocab_size = vocab;
    if (static_cast<int64_t>(corpus->tokens.train_stream().size()) <= c.seq_len + 1) {
      throw std::invalid_argument("corpus '" + c.corpus +
                                  "' has fewer training tokens than seq_len");
    }
    if (resume_from) {
      check_resume_config(to_toml(resume_from->checkpoint.config), to_toml(c), kResumeMutableKeys,
                          resume_from->dir);
      if (rank0) {
        remove_checkpoints_after_resume_point(kRunRules, resume_from->dir,
                                              resume_from->skipped_dirs);
      }
    }
  } catch (const std::exception& e) {
    // The other ranks wait for this one: tell them why it stops.
    if (group) {
      start.error = e.what();
      agree_to_start(*group, start);
    }
    throw;
  }
  if (group) {
    start.config_toml = shared_config(to_toml(c));
    start.checkpoint_step = resume_from ? resume_from->checkpoint.step : 0;
    start.checkpoint = resume_from ? resume_from->dir : "";
    agree_to_start(*group, start);
    // The ranks agree on the world size and the config here, so all of them stop alike.
    if (c.batch % world.size != 0) {
      throw std::invalid_argument(fmt::format(
          "data.batch = {} does not split evenly over WORLD_SIZE = {} ranks (data.batch is the "
          "global batch; make it a multiple of the world size)",
          c.batch, world.size));
    }
    group->start_collectives(device);
  }
  const int64_t vocab = c.model.vocab_size;

  torch::manual_seed(c.seed);
  model::Gpt net(c.model);
  int64_t start_step = 0;
  if (resume_from) {
    net = resume_from->checkpoint.model;
    start_step = resume_from->checkpoint.step;
  }
  // Initialised (or loaded) on the CPU, so a seed gives the same weights on every device.
  net->to(device);
  torch::optim::AdamW optimizer = make_adamw(*net, c.lr, c.weight_decay);
  if (resume_from) load_optimizer_state(resume_from->dir, net, optimizer);

  const ModelFlops flops = training_flops_per_token(*net, c.seq_len);
  const std::string hardware = device_name(device);
  // Throughput is the world's (global batch per step), so the peak is every rank's device.
  const double peak_flops =
      (c.peak_tflops > 0 ? c.peak_tflops * 1e12 : peak_flops_from_name(hardware, bf16)) *
      world.size;
  std::optional<DataParallel> parallel;
  if (group) {
    parallel.emplace(*group, *net, options.bucket_bytes);
    parallel->check_replicas_agree(start_step);
  }

  std::ofstream metrics;
  if (rank0) {
    metrics =
        open_metrics(c.out_dir, resume_from ? std::optional<int64_t>(start_step) : std::nullopt);
  }
  const bool quiet = options.quiet || !rank0;
  if (!quiet && parallel) {
    fmt::print(stderr,
               "[train] data-parallel: {} ranks over {}, global batch {} = {} per rank, {} "
               "gradient bucket(s) of up to {} MiB\n",
               world.size, device.is_cuda() ? "NCCL" : "Gloo", c.batch, c.batch / world.size,
               parallel->bucket_count(), options.bucket_bytes >> 20);
  }
  if (!quiet) {
    fmt::print(stderr, "[train] {} parameters, attention={} schedule={} W={} R={}, {} steps{}\n",
               model::parameter_count(*net), model::to_string(c.model.attention),
               model::to_string(c.model.schedule), c.model.window, c.model.reach, c.steps,
               resume_from ? fmt::format(", resuming from step {}", start_step) : "");
    fmt::print(stderr,
               "[train] device {} ({}), {}, batch {} x seq_len {}, {:.1f} MFLOP/token (matrix "
               "products {:.1f}, attention {:.1f}), peak {}{}\n",
               device.str(), hardware, bf16 ? "bf16 autocast" : "fp32", c.batch, c.seq_len,
               flops.total() / 1e6, flops.matmul / 1e6, flops.attention / 1e6,
               peak_flops > 0 ? fmt::format("{:.0f} TFLOP/s", peak_flops / 1e12) : "unknown",
               peak_flops > 0 ? "" : " (no MFU; set train.peak_tflops)");
  }

  LoopSettings settings;
  settings.steps = c.steps;
  settings.lr = c.lr;
  settings.min_lr = c.min_lr;
  settings.warmup = c.warmup;
  settings.grad_clip = c.grad_clip;
  settings.log_every = c.log_every;
  settings.eval_every = c.eval_every;
  settings.checkpoint_every = c.checkpoint_every;
  settings.profile_steps = c.profile_steps;
  settings.tokens_per_step = c.batch * c.seq_len;
  settings.flops_per_token = flops.total();
  settings.peak_flops = peak_flops;
  settings.bf16 = bf16;
  settings.cuda_graph = c.cuda_graph == "auto";
  settings.loss_chunk_rows = resolve_loss_chunk_rows(c.loss_chunk_rows, device, vocab);
  settings.quiet = quiet;
  settings.log_prefix = "[train]";
  settings.stop_after_step = options.stop_after_step;
  settings.first_loss_reference = std::log(static_cast<double>(vocab));

  LoopHooks hooks;
  hooks.batch = [&](int64_t step, bool pinned) {
    const int64_t rows = c.batch / world.size;
    return StepBatch{
        batch_for_step(corpus->tokens.train_stream(), c, step, world.rank * rows, rows, pinned),
        {},
        {},
        {}};
  };
  hooks.evaluate = [&] {
    net->eval();
    auto r = eval::evaluate_lengths(
        [&](const torch::Tensor& x) {
          const Bf16Autocast autocast(bf16);
          return net(x.to(device));
        },
        corpus->heldout, {c.seq_len}, c.eval_tokens);
    net->train();
    return r[0].mean_nll;
  };
  hooks.checkpoint = [&](int64_t steps_done) {
    if (parallel) parallel->check_replicas_agree(steps_done);
    if (!rank0) return fmt::format("(rank 0 writes the checkpoint of step {})", steps_done);
    const auto dir = save_checkpoint(c.out_dir, steps_done, net, optimizer, c, *corpus->tokenizer);
    remove_old_checkpoints(c.out_dir, c.keep_checkpoints);
    return dir;
  };
  if (rank0) {
    hooks.metrics = [&](const nlohmann::json& line) {
      metrics << line.dump() << "\n";
      metrics.flush();
    };
  }
  if (parallel) parallel->attach(hooks);
  const LoopResult loop = run_loop(net, optimizer, device, start_step, settings, hooks);

  TrainResult result;
  result.steps_done = loop.steps_done;
  result.last_loss = loop.last_loss;
  result.heldout_loss = loop.heldout_loss;
  result.tokens_per_second = loop.tokens_per_second;
  result.interrupted = loop.interrupted;
  result.checkpoint = loop.checkpoint;
  return result;
}

}  // namespace reach::train
