#include "model/attention/kv_cache.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

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

void LayerKvCache::view_batched() {
  const int64_t longest = *std::max_element(lengths.begin(), lengths.end());
  const auto requests = static_cast<int64_t>(lengths.size());
  keys = key_buffer.narrow(0, 0, requests).narrow(2, 0, longest);
  values = value_buffer.narrow(0, 0, requests).narrow(2, 0, longest);
}

void LayerKvCache::add_request(const torch::Tensor& k, const torch::Tensor& v, int64_t max_requests,
                               int64_t cache_capacity) {
  if (keys.defined() && !batched()) {
    throw std::logic_error("KV cache: add_request on a cache that is not batched");
  }
  const int64_t n = k.size(2);
  if (!key_buffer.defined()) {
    capacity = cache_capacity;
    key_buffer = torch::zeros({max_requests, k.size(1), capacity, k.size(3)}, k.options());
    value_buffer = torch::zeros({max_requests, v.size(1), capacity, v.size(3)}, v.options());
  }
  const auto b = static_cast<int64_t>(lengths.size());
  if (b >= key_buffer.size(0)) throw std::length_error("KV cache: no room for another request");
  if (n > capacity) {
    throw std::length_error("KV cache: a request of " + std::to_string(n) +
                            " tokens exceeds the capacity " + std::to_string(capacity));
  }
  key_buffer[b].narrow(1, 0, n).copy_(k[0]);
  value_buffer[b].narrow(1, 0, n).copy_(v[0]);
  lengths.push_back(n);
  view_batched();
}

void LayerKvCache::append_batched(const torch::Tensor& k, const torch::Tensor& v) {
  const auto requests = static_cast<int64_t>(lengths.size());
  if (!batched() || k.size(0) != requests || k.size(2) != 1) {
    throw std::invalid_argument("KV cache: a batched step appends one token per request (" +
                                std::to_string(requests) + " requests)");
  }
  for (int64_t b = 0; b < requests; ++b) {
    const int64_t n = lengths[static_cast<size_t>(b)];
    if (n + 1 > capacity) {
      throw std::length_error("KV cache: request " + std::to_string(b) + " holds " +
                              std::to_string(n) + " tokens; one more exceeds its capacity " +
                              std::to_string(capacity));
    }
  }
  // Row lengths[b] of request b, for every request at once: one scatter per buffer (on a GPU
  // two kernels per layer, not two per request). The indexed shape is [requests, H, d].
  using torch::indexing::Slice;
  const auto device = key_buffer.device();
  const auto request = torch::arange(requests, torch::dtype(torch::kLong).device(device));
  const auto row = torch::tensor(lengths, torch::kLong).to(device);
  key_buffer.index_put_({request, Slice(), row}, k.select(2, 0).to(key_buffer.scalar_type()));
  value_buffer.index_put_({request, Slice(), row}, v.select(2, 0).to(value_buffer.scalar_type()));
  for (auto& n : lengths) ++n;
  view_batched();
}

void LayerKvCache::write_batched(const torch::Tensor& k, const torch::Tensor& v,
                                 const torch::Tensor& rows) {
  const auto requests = static_cast<int64_t>(lengths.size());
  if (!batched() || k.size(0) != requests || k.size(2) != 1 || rows.numel() != requests ||
      rows.scalar_type() != torch::kLong || rows.device() != key_buffer.device()) {
    throw std::invalid_argument("KV cache: write_batched takes one token per request (" +
                                std::to_string(requests) +
                                " requests) and their rows as int64 on the cache's device");
  }
  using torch::indexing::Slice;
  const auto request =
      torch::arange(requests, torch::dtype(torch::kLong).device(key_buffer.device()));
  key_buffer.index_put_({request, Slice(), rows}, k.select(2, 0).to(key_buffer.scalar_type()));
  value_buffer.index_put_({request, Slice(), rows}, v.select(2, 0).to(value_buffer.scalar_type()));
}

void LayerKvCache::advance_batched() {
  if (!batched())
    throw std::logic_error("KV cache: advance_batched on a cache that is not batched");
  for (size_t b = 0; b < lengths.size(); ++b) {
    if (lengths[b] + 1 > capacity) {
      throw std::length_error("KV cache: request " + std::to_string(b) + " holds " +
                              std::to_string(lengths[b]) +
                              " tokens; one more exceeds its capacity " + std::to_string(capacity));
    }
  }
  for (auto& n : lengths) ++n;
  view_batched();
}

void LayerKvCache::split_into_requests() {
  if (batched()) throw std::logic_error("KV cache: split_into_requests on a batched cache");
  if (!key_buffer.defined() || length() == 0) {
    throw std::logic_error(
        "KV cache: split_into_requests needs a capacity cache holding tokens (reserve, then a "
        "prefill)");
  }
  lengths.assign(static_cast<size_t>(key_buffer.size(0)), length());
  view_batched();
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
