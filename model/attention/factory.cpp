#include "model/attention/factory.hpp"

#include "model/attention/chunk_retrieval.hpp"
#include "model/attention/dense.hpp"
#include "model/attention/dilated.hpp"
#include "model/attention/entmax.hpp"
#include "model/attention/learned_dilated.hpp"
#include "model/attention/window.hpp"

namespace reach::model::attention {

std::shared_ptr<AttentionLayer> make_attention(const ModelConfig& c, int64_t layer) {
  // Any normaliser but softmax, and a distance bias over a sparse key set, go through the
  // entmax operator, whatever the key set.
  if (c.normalizer != Normalizer::softmax ||
      (has_distance_bias(c.positions) && c.attention != AttentionFamily::dense)) {
    return std::make_shared<EntmaxAttention>(c, layer);
  }
  switch (c.attention) {
    case AttentionFamily::dense:
      return std::make_shared<DenseAttention>(c, layer);
    case AttentionFamily::window:
      return std::make_shared<WindowAttention>(c, layer);
    case AttentionFamily::fibonacci:
    case AttentionFamily::power_of_two:
      if (c.schedule == AlphaSchedule::learned) {
        return std::make_shared<LearnedDilatedAttention>(c, layer);
      }
      return std::make_shared<DilatedAttention>(c, layer);
    case AttentionFamily::chunk:
      // Window layers below the middle; retrieval layers (the first one encoding) above.
      if (is_chunk_retrieval_layer(c, layer)) {
        return std::make_shared<ChunkRetrievalAttention>(c, layer);
      }
      if (c.chunk_local != AttentionFamily::window) {
        // Dilated layers under chunk retrieval: the layer that family's own model would have
        // here (its alpha from model.schedule at this layer index).
        ModelConfig local = c;
        local.attention = c.chunk_local;
        return make_attention(local, layer);
      }
      return std::make_shared<WindowAttention>(c, layer);
  }
  throw std::logic_error("model.attention has no attention family");
}

}  // namespace reach::model::attention
