#include "model/attention/kv_cache.hpp"

#include <stdexcept>

namespace reach::model::attention {

void LayerKvCache::append(const torch::Tensor& k, const torch::Tensor& v) {
  if (!keys.defined()) {
    keys = k;
    values = v;
    return;
  }
  keys = torch::cat({keys, k}, 2);
  values = torch::cat({values, v}, 2);
}

LayerKvCache& KvCache::layer(int64_t index) {
  if (index < 0 || index >= layers()) {
    throw std::out_of_range("KV cache has " + std::to_string(layers()) + " layers, asked for " +
                            std::to_string(index));
  }
  return layers_[static_cast<size_t>(index)];
}

}  // namespace reach::model::attention
