#include "model/attention/kv_cache.hpp"

#include <stdexcept>

namespace reach::model::attention {

void LayerKvCache::append(const torch::Tensor& k, const torch::Tensor& v) {
  if (capacity > 0) {
    const int64_t n = length(), t = k.size(2);
    if (n + t > capacity) {
      throw std::length_error("KV cache holds " + std::to_string(n) + " tokens; " +
                              std::to_string(t) + " more exceed its capacity " +
                              std::to_string(capacity));
    }
    if (!key_buffer.defined()) {
      key_buffer = torch::empty({k.size(0), k.size(1), capacity, k.size(3)}, k.options());
      value_buffer = torch::empty({v.size(0), v.size(1), capacity, v.size(3)}, v.options());
    }
    key_buffer.narrow(2, n, t).copy_(k);
    value_buffer.narrow(2, n, t).copy_(v);
    keys = key_buffer.narrow(2, 0, n + t);
    values = value_buffer.narrow(2, 0, n + t);
    return;
  }
  if (!keys.defined()) {
    keys = k;
    values = v;
    return;
  }
  keys = torch::cat({keys, k}, 2);
  values = torch::cat({values, v}, 2);
}

void KvCache::reserve(int64_t tokens) {
  if (tokens < 1) throw std::invalid_argument("KV cache capacity must be >= 1");
  for (auto& layer : layers_) {
    if (layer.length() > 0) throw std::logic_error("KV cache reserve after the first append");
    layer.capacity = tokens;
  }
}

LayerKvCache& KvCache::layer(int64_t index) {
  if (index < 0 || index >= layers()) {
    throw std::out_of_range("KV cache has " + std::to_string(layers()) + " layers, asked for " +
                            std::to_string(index));
  }
  return layers_[static_cast<size_t>(index)];
}

}  // namespace reach::model::attention
