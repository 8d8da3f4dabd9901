// The dilated key set of one layer: its alpha from the schedule and its integer offsets
// beyond the window (pattern/ computes both), plus the per-request rungs budget.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "model/attention/forward_context.hpp"
#include "model/model_config.hpp"

namespace reach::model::attention {

// Throws std::invalid_argument unless config.reach is resolved and >= config.window.
void check_reach(const ModelConfig& config);
// Layer `layer`'s alpha from config.schedule (for a learned schedule, its initial value).
double schedule_alpha(const ModelConfig& config, int64_t layer);
// round(alpha * b) offsets of the config's base for W <= d <= R.
std::vector<int64_t> layer_offsets(const ModelConfig& config, double alpha);
// The offsets as the ops take them: 1-D float64 distances.
torch::Tensor offsets_tensor(const std::vector<int64_t>& offsets);
// The first budget.rungs offsets (all when unset); offsets ascend, so these are the nearest.
torch::Tensor within_budget(const torch::Tensor& offsets, const AttentionBudget& budget);
// The window a query reads: budget.window (>= 1), else the trained one.
int64_t budget_window(int64_t trained, const AttentionBudget& budget);
// The offsets at or beyond `window` (a widened window already holds the nearer keys).
torch::Tensor beyond_window(const torch::Tensor& offsets, int64_t window);

}  // namespace reach::model::attention
