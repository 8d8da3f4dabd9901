#pragma once
// The checkpoint a command loads from a path the user gave: the path itself when it is a
// checkpoint directory, else the newest checkpoint of that run directory that loads. Says on
// standard error which newer checkpoints were passed over and why, so a user never evaluates
// an older checkpoint without knowing.
#include <string>
#include <string_view>

#include "train/checkpoint.hpp"

namespace reach::cli {

struct ChosenCheckpoint {
  std::string dir;
  train::Checkpoint checkpoint;
};

ChosenCheckpoint load_chosen_checkpoint(const std::string& path, std::string_view command);

}  // namespace reach::cli
