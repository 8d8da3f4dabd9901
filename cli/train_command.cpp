// `reach train [CONFIG.toml | --config CONFIG.toml] [--set key=value ...] [--resume | --overwrite]
// [--quiet] [--nproc N] [--bucket-mb MB]`. Data-parallel over N local processes with --nproc, or
// as one rank of a world that torchrun-style environment variables describe (train/world.hpp).
#include <fmt/core.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "cli/commands.hpp"
#include "cli/config_file_option.hpp"
#include "cli/validators.hpp"
#include "train/local_launch.hpp"
#include "train/trainer.hpp"
#include "train/world.hpp"

namespace reach::cli {
namespace {

struct TrainOptions {
  std::string config_path;
  std::vector<std::string> overrides;
  bool resume = false;
  bool overwrite = false;
  bool quiet = false;
  int nproc = 1;
  double bucket_mb = 25;
};

std::string resume_help() {
  std::string keys;
  for (const char* key : train::kResumeMutableKeys) keys += std::string("\n  ") + key;
  return "\nOn --resume these config keys may differ from the checkpoint's; any other (model.*, "
         "data.*, run.seed, the optimiser) must match it, or the resume is refused:" +
         keys + "\n";
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto o = std::make_shared<TrainOptions>();
  auto* cmd = app.add_subcommand("train", "Train a language model from a TOML config");
  add_config_file_options(cmd, o->config_path,
                          "TOML config ([run] [data] [model] [train] sections; see configs/); "
                          "defaults when omitted");
  cmd->add_option("--set", o->overrides, "Override a config key: section.key=value (repeatable)");
  auto* resume = cmd->add_flag("--resume", o->resume,
                               "Continue from the newest valid checkpoint in run.out_dir (exactly: "
                               "same batches, same optimizer state); an error when there is none");
  cmd->add_flag("--overwrite", o->overwrite,
                "run.out_dir holds a run (checkpoints, metrics.jsonl): delete it and start over "
                "(without this or --resume, such a directory is refused)")
      ->excludes(resume);
  cmd->add_flag("--quiet", o->quiet, "No progress lines");
  cmd->add_option("--nproc", o->nproc,
                  "Data-parallel training over N processes of this machine (one per GPU, or N "
                  "CPU processes over Gloo); data.batch is the global batch. Or start each rank "
                  "yourself with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (and LOCAL_RANK) "
                  "set, as torchrun does")
      ->capture_default_str();
  cmd->add_option("--bucket-mb", o->bucket_mb,
                  "Data-parallel: gradients are all-reduced in buckets of about this many MiB, "
                  "overlapped with the backward")
      ->capture_default_str()
      ->check(positive());
  cmd->footer("\nEvery config key with its default (set them in the file or with --set):\n\n" +
              train::train_config_help() + resume_help());
  cmd->callback([o] {
    // A bad config fails here once, not once per rank.
    const auto config = o->config_path.empty()
                            ? train::parse_train_config("", o->overrides)
                            : train::load_train_config(o->config_path, o->overrides);
    if (o->nproc != 1) {
      // The launcher: the ranks are copies of this command; it ends as they do.
      const int status = train::launch_local_ranks(o->nproc, train::command_line_without_nproc());
      std::fflush(stderr);
      std::exit(status);
    }
    const train::World world = train::world_from_environment();
    const auto result = train::run_training(
        config, {.resume = o->resume,
                 .overwrite = o->overwrite,
                 .quiet = o->quiet,
                 .world = world,
                 .bucket_bytes = static_cast<int64_t>(o->bucket_mb * (1 << 20))});
    if (world.rank == 0) {
      fmt::print("steps {} loss {:.4f} heldout {:.4f} tokens/s {:.0f} checkpoint {}\n",
                 result.steps_done, result.last_loss, result.heldout_loss, result.tokens_per_second,
                 result.checkpoint);
    }
    if (result.interrupted) std::exit(130);
  });
}

}  // namespace reach::cli
