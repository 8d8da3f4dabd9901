#include "model/attention/learned_dilated.hpp"

#include <cmath>
#include <stdexcept>
#include <utility>

#include "model/attention/layer_offsets.hpp"
#include "ops/dilated_attention.hpp"

namespace reach::model::attention {
namespace {

double inverse_softplus(double y) { return y > 20 ? y : std::log(std::expm1(y)); }

}  // namespace

LearnedDilatedAttention::LearnedDilatedAttention(const ModelConfig& config, int64_t layer)
    : AttentionLayer(config, layer) {
  check_reach(config);
  theta_ = register_parameter(
      "theta", torch::tensor(inverse_softplus(schedule_alpha(config, layer)), torch::kFloat64));
}

double LearnedDilatedAttention::alpha() const {
  return torch::softplus(theta_.detach()).item<double>();
}

std::vector<int64_t> LearnedDilatedAttention::integer_offsets() const {
  return layer_offsets(config(), alpha());
}

torch::Tensor LearnedDilatedAttention::host_value() const {
  return torch::softplus(theta_.detach());
}

torch::Tensor LearnedDilatedAttention::attend(const torch::Tensor& q, const torch::Tensor& k,
                                              const torch::Tensor& v,
                                              const ForwardContext& context) {
  if (context.budget.rungs) {
    throw std::invalid_argument(
        "attention budget: rungs needs a static schedule (model.schedule = learned has "
        "fractional offsets)");
  }
  const auto alpha_value = std::exchange(next_alpha_, std::nullopt);
  return ops::dilated_attention_learned(
      q, k, v, torch::softplus(theta_), offset_base(config().attention), config().window,
      config().reach, alpha_value ? c10::optional<double>(*alpha_value) : c10::nullopt);
}

}  // namespace reach::model::attention
