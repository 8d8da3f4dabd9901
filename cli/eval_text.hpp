// The text `reach eval` and `reach budget-study` score a checkpoint on: all of a user's
// file (or folder), another corpus's held-out part, or by default the checkpoint's own
// held-out part, split as in training.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train/checkpoint.hpp"

namespace reach::cli {

// The documents a checkpoint is scored on, and a description of them.
struct EvalText {
  std::vector<std::vector<int64_t>> documents;
  std::string description;
  std::string remedy;  // what to change when they are too short
};

// text_file / corpus: empty for the checkpoint's own held-out text.
EvalText eval_text(const std::string& text_file, const std::string& corpus,
                   const train::Checkpoint& ckpt, const std::string& dir);

}  // namespace reach::cli
