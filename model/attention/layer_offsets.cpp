#include "model/attention/layer_offsets.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "pattern/dilated_offsets.hpp"
#include "pattern/paper_convention.hpp"

namespace reach::model::attention {

void check_reach(const ModelConfig& config) {
  if (config.reach < config.window) {
    throw std::invalid_argument("model.reach (" + std::to_string(config.reach) +
                                ") must be resolved and >= model.window");
  }
}

double schedule_alpha(const ModelConfig& config, int64_t layer) {
  if (config.convention == pattern::OffsetConvention::paper) {
    return pattern::paper_layer_alphas(config.schedule, config.layers)[static_cast<size_t>(layer)];
  }
  const pattern::ScheduleSpec schedule{config.schedule, config.layers, config.alpha,
                                       config.alpha_min, config.alpha_max};
  return pattern::layer_alphas(schedule)[static_cast<size_t>(layer)];
}

std::vector<int64_t> layer_offsets(const ModelConfig& config, double alpha) {
  if (config.convention == pattern::OffsetConvention::paper) {
    // Rungs up to T - 1 with T the trained length (config.reach resolves to it).
    return pattern::paper_offsets(
        {offset_base(config.attention), alpha, config.window, config.reach});
  }
  return pattern::integer_offsets(
      {offset_base(config.attention), alpha, config.window, config.reach});
}

torch::Tensor offsets_tensor(const std::vector<int64_t>& offsets) {
  return torch::tensor(std::vector<double>(offsets.begin(), offsets.end()), torch::kFloat64);
}

torch::Tensor within_budget(const torch::Tensor& offsets, const AttentionBudget& budget) {
  if (!budget.rungs) return offsets;
  if (*budget.rungs < 0) {
    throw std::invalid_argument("attention budget: rungs must be >= 0, got " +
                                std::to_string(*budget.rungs));
  }
  return offsets.narrow(0, 0, std::min(*budget.rungs, offsets.size(0)));
}

int64_t budget_window(int64_t trained, const AttentionBudget& budget) {
  if (!budget.window) return trained;
  if (*budget.window < 1) {
    throw std::invalid_argument("attention budget: window must be >= 1, got " +
                                std::to_string(*budget.window));
  }
  return *budget.window;
}

torch::Tensor beyond_window(const torch::Tensor& offsets, int64_t window) {
  // Ascending host distances: usually none is inside, and the tensor is returned as it is.
  const auto w = static_cast<double>(window);
  if (offsets.numel() == 0 || offsets[0].item<double>() >= w) return offsets;
  return offsets.index({offsets >= w});
}

}  // namespace reach::model::attention
