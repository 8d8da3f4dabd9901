// `reach train CONFIG.toml [--set key=value ...] [--resume]`.
#include <fmt/core.h>

#include <memory>

#include "cli/commands.hpp"
#include "train/trainer.hpp"

namespace reach::cli {
namespace {

struct TrainOptions {
  std::string config_path;
  std::vector<std::string> overrides;
  bool resume = false;
};

}  // namespace

void add_train_command(CLI::App& app) {
  auto o = std::make_shared<TrainOptions>();
  auto* cmd = app.add_subcommand("train", "Train a language model from a TOML config");
  cmd->add_option("config", o->config_path,
                  "TOML config ([run] [data] [model] [train] sections; see configs/)")
      ->required();
  cmd->add_option("--set", o->overrides, "Override a config key: section.key=value (repeatable)");
  cmd->add_flag("--resume", o->resume,
                "Continue from the newest checkpoint in run.out_dir (exactly: same batches, "
                "same optimizer state)");
  cmd->callback([o] {
    const auto config = train::load_train_config(o->config_path, o->overrides);
    const auto result = train::run_training(config, {o->resume, false, 0});
    fmt::print("steps {} loss {:.4f} heldout {:.4f} tokens/s {:.0f} checkpoint {}\n",
               result.steps_done, result.last_loss, result.heldout_loss, result.tokens_per_second,
               result.checkpoint);
    if (result.interrupted) std::exit(130);
  });
}

}  // namespace reach::cli
