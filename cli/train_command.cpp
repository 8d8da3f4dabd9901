// `reach train [CONFIG.toml | --config CONFIG.toml] [--set key=value ...] [--resume]`.
#include <fmt/core.h>

#include <memory>

#include "cli/commands.hpp"
#include "cli/config_file_option.hpp"
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
  add_config_file_options(cmd, o->config_path,
                          "TOML config ([run] [data] [model] [train] sections; see configs/); "
                          "defaults when omitted");
  cmd->add_option("--set", o->overrides, "Override a config key: section.key=value (repeatable)");
  cmd->add_flag("--resume", o->resume,
                "Continue from the newest checkpoint in run.out_dir (exactly: same batches, "
                "same optimizer state)");
  cmd->footer("\nEvery config key with its default (set them in the file or with --set):\n\n" +
              train::train_config_help());
  cmd->callback([o] {
    const auto config = o->config_path.empty()
                            ? train::parse_train_config("", o->overrides)
                            : train::load_train_config(o->config_path, o->overrides);
    const auto result = train::run_training(config, {o->resume, false, 0});
    fmt::print("steps {} loss {:.4f} heldout {:.4f} tokens/s {:.0f} checkpoint {}\n",
               result.steps_done, result.last_loss, result.heldout_loss, result.tokens_per_second,
               result.checkpoint);
    if (result.interrupted) std::exit(130);
  });
}

}  // namespace reach::cli
