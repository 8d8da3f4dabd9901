#include "model/attention/learned_dilated.hpp"

#include <cmath>
#include <stdexcept>
#include <utility>

#include "model/attention/cached_decode.hpp"
#include "model/attention/layer_offsets.hpp"
#include "ops/dilated_attention.hpp"
#include "pattern/dilated_offsets.hpp"

namespace reach::model::attention {
namespace {

double inverse_softplus(double y) { return y > 20 ? y : std::log(std::expm1(y)); }

void check_no_rungs(const AttentionBudget& budget) {
  if (budget.rungs) {
    throw std::invalid_argument(
        "attention budget: rungs needs integer offsets (model.schedule = learned has fractional "
        "offsets: freeze the schedule for inference, or use a static schedule)");
  }
}

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
  // Frozen: the integer offsets are fixed, alpha is not read (and a decode step captured in a
  // CUDA graph must not read anything from the device).
  if (frozen_.defined()) return {};
  return torch::softplus(theta_.detach());
}

torch::Tensor LearnedDilatedAttention::attend(const torch::Tensor& q, const torch::Tensor& k,
                                              const torch::Tensor& v,
                                              const ForwardContext& context) {
  const int64_t window = budget_window(config().window, context.budget);
  if (frozen_.defined()) {
    return ops::dilated_attention(q, k, v, window,
                                  beyond_window(within_budget(frozen_, context.budget), window));
  }
  check_no_rungs(context.budget);
  const auto alpha_value = std::exchange(next_alpha_, std::nullopt);
  return ops::dilated_attention_learned(
      q, k, v, torch::softplus(theta_), offset_base(config().attention), window, config().reach,
      alpha_value ? c10::optional<double>(*alpha_value) : c10::nullopt);
}

void LearnedDilatedAttention::freeze_schedule() { frozen_ = offsets_tensor(integer_offsets()); }

torch::Tensor LearnedDilatedAttention::attend_cached(const torch::Tensor& q,
                                                     const LayerKvCache& cache,
                                                     const ForwardContext& context) {
  if (!decode_kernel_applies(q, context)) return AttentionLayer::attend_cached(q, cache, context);
  ops::DecodeAttentionOptions key_set;
  key_set.window = config().window;
  if (frozen_.defined()) {
    key_set.offsets.assign(frozen_.data_ptr<double>(),
                           frozen_.data_ptr<double>() + frozen_.numel());
  } else {
    check_no_rungs(context.budget);
    // The real offsets alpha * b, as the learned op interpolates them.
    key_set.offsets = pattern::fractional_offsets({offset_base(config().attention), alpha(),
                                                   budget_window(config().window, context.budget),
                                                   config().reach})
                          .distances;
  }
  return decode_with_kernel(q, cache, key_set, context);
}

}  // namespace reach::model::attention
