// The attention family of each layer, from the model config.
#pragma once

#include <cstdint>
#include <memory>

#include "model/attention/attention_layer.hpp"
#include "model/model_config.hpp"

namespace reach::model::attention {

// Layer `layer` of a model with `config` (validated; config.reach resolved for dilated
// families).
std::shared_ptr<AttentionLayer> make_attention(const ModelConfig& config, int64_t layer);

}  // namespace reach::model::attention
