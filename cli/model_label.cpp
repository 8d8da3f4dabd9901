#include "cli/model_label.hpp"

namespace reach::cli {

std::string attention_label(const model::ModelConfig& c) {
  // Only the dilated families have a schedule: "dense (stagger)" would name one it never uses.
  const std::string family = model::to_string(c.attention);
  if (c.attention == model::AttentionFamily::chunk &&
      c.chunk_local != model::AttentionFamily::window) {
    // Chunk retrieval over dilated layers: "chunk over fibonacci-stagger".
    return family + " over " + model::to_string(c.chunk_local) + "-" + model::to_string(c.schedule);
  }
  return model::is_dilated(c.attention) ? family + "-" + model::to_string(c.schedule) : family;
}

std::string model_label(const model::ModelConfig& c) {
  std::string label = attention_label(c);
  if (c.normalizer != model::Normalizer::softmax) label += " + " + model::to_string(c.normalizer);
  if (c.positions != model::Positions::rope) label += " + " + model::to_string(c.positions);
  return label;
}

}  // namespace reach::cli
