#include "model/attention/window.hpp"

#include "model/attention/layer_offsets.hpp"
#include "ops/dilated_attention.hpp"

namespace reach::model::attention {

WindowAttention::WindowAttention(const ModelConfig& config, int64_t layer)
    : AttentionLayer(config, layer), no_offsets_(torch::empty({0}, torch::kFloat64)) {}

torch::Tensor WindowAttention::attend(const torch::Tensor& q, const torch::Tensor& k,
                                      const torch::Tensor& v, const ForwardContext& context) {
  return ops::dilated_attention(q, k, v, budget_window(config().window, context.budget),
                                no_offsets_);
}

}  // namespace reach::model::attention
