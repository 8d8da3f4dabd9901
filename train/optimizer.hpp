// The optimiser recipe shared by `reach train` and `reach tasks train`: AdamW with
// betas (0.9, 0.95), decoupled weight decay on matrices only (every parameter of rank >= 2),
// and a learning rate with linear warmup then cosine decay to a floor.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace reach::train {

torch::optim::AdamW make_adamw(const torch::nn::Module& model, double lr, double weight_decay);

// Learning rate at `step` (0-based): lr * (step + 1) / warmup during warmup, then cosine from
// lr down to min_lr at `steps`.
double warmup_cosine_lr(int64_t step, int64_t steps, int64_t warmup, double lr, double min_lr);

}  // namespace reach::train
