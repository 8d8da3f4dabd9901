// The optimiser keys shared by `reach train` and `reach tasks train` (train.lr, train.min_lr,
// train.warmup, train.weight_decay, train.grad_clip; see train/optimizer.hpp for the recipe).
// Both run configs are an OptimizerConfig, so `config.lr` reads the same in either.
#pragma once

#include <cstdint>

namespace reach::train {

struct OptimizerConfig {
  double lr = 3e-3;  // peak learning rate
  double min_lr = 3e-4;
  int64_t warmup = 50;
  double weight_decay = 0.1;
  double grad_clip = 1.0;
};

}  // namespace reach::train
