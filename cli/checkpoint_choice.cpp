#include "cli/checkpoint_choice.hpp"

#include <fmt/core.h>

namespace reach::cli {

ChosenCheckpoint load_chosen_checkpoint(const std::string& path, std::string_view command) {
  auto choice = train::choose_checkpoint(path);
  for (const auto& skipped : choice.skipped) {
    fmt::print(stderr, "[{}] skipping checkpoint {}\n", command, skipped);
  }
  return {choice.dir, std::move(choice.checkpoint)};
}

}  // namespace reach::cli
