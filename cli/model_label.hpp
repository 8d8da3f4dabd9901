// How reports name a model: its attention (with the alpha schedule where it has one), then
// the normaliser and positions when they are not the defaults (softmax, RoPE).
#pragma once

#include <string>

#include "model/model_config.hpp"

namespace reach::cli {

// "dense", "window", "fibonacci-stagger", "power_of_two-learned + asentmax + nape".
std::string attention_label(const model::ModelConfig& config);
std::string model_label(const model::ModelConfig& config);

}  // namespace reach::cli
