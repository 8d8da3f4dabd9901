#include "model/attention/cached_decode.hpp"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

namespace reach::model::attention {

bool decode_kernel_applies(const torch::Tensor& q) { return q.device().is_cpu(); }

torch::Tensor decode_with_kernel(const torch::Tensor& q, const LayerKvCache& cache,
                                 ops::DecodeAttentionOptions key_set, const ForwardContext& context,
                                 bool windowed) {
  const int64_t batch = q.size(0), n = cache.length();
  const auto& budget = context.budget;
  if (budget.window && windowed) key_set.windows.assign(static_cast<size_t>(batch), *budget.window);
  if (budget.rungs) {
    if (*budget.rungs < 0) {
      throw std::invalid_argument("attention budget: rungs must be >= 0, got " +
                                  std::to_string(*budget.rungs));
    }
    const auto rungs =
        std::min<int64_t>(*budget.rungs, static_cast<int64_t>(key_set.offsets.size()));
    key_set.rungs.assign(static_cast<size_t>(batch), rungs);
  }
  if (budget.mass) key_set.mass.assign(static_cast<size_t>(batch), *budget.mass);
  const auto& keys = cache.key_buffer.defined() ? cache.key_buffer : cache.keys.contiguous();
  const auto& values =
      cache.value_buffer.defined() ? cache.value_buffer : cache.values.contiguous();
  auto result = ops::decode_attention(q, keys, values,
                                      std::vector<int64_t>(static_cast<size_t>(batch), n), key_set);
  if (context.usage) {
    context.usage->queries += static_cast<int64_t>(result.keys_read.size());
    context.usage->keys +=
        std::accumulate(result.keys_read.begin(), result.keys_read.end(), int64_t{0});
  }
  return result.out;
}

}  // namespace reach::model::attention
