#include "ops/decode_attention.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cpu/decode_attention.hpp"

namespace reach::ops {
namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument("decode attention: " + message);
}

// A per-head parameter as contiguous float64 on the CPU (undefined stays undefined).
torch::Tensor per_head(const torch::Tensor& t, int64_t heads, const char* name) {
  if (!t.defined()) return t;
  require(t.numel() == heads, std::string(name) + " must have one value per head (" +
                                  std::to_string(heads) + "), got " + std::to_string(t.numel()));
  return t.detach().to(torch::kCPU, torch::kFloat64).contiguous();
}

const double* data_or_null(const torch::Tensor& t) {
  return t.defined() ? t.data_ptr<double>() : nullptr;
}

}  // namespace

DecodeAttentionResult decode_attention(const torch::Tensor& q, const torch::Tensor& key_buffer,
                                       const torch::Tensor& value_buffer,
                                       const std::vector<int64_t>& lengths,
                                       const DecodeAttentionOptions& o) {
  require(q.dim() == 4 && q.size(2) >= 1,
          "q must be [batch, heads, queries, head_dim] (the last queries positions of each "
          "request)");
  require(key_buffer.dim() == 4 && key_buffer.sizes() == value_buffer.sizes(),
          "key and value buffers must both be [batch, kv_heads, capacity, head_dim]");
  require(key_buffer.size(0) == q.size(0) && key_buffer.size(3) == q.size(3),
          "q and the cache buffers disagree on batch or head_dim");
  require(q.device().is_cpu() && key_buffer.device().is_cpu() && value_buffer.device().is_cpu(),
          "only the CPU decode kernel exists (tensors are on " + q.device().str() + ")");
  require(q.scalar_type() == key_buffer.scalar_type() &&
              q.scalar_type() == value_buffer.scalar_type() &&
              (q.scalar_type() == torch::kFloat32 || q.scalar_type() == torch::kFloat64),
          "q and the cache must share one dtype, float32 or float64");
  require(key_buffer.is_contiguous() && value_buffer.is_contiguous(),
          "cache buffers must be contiguous");
  const int64_t batch = q.size(0), heads = q.size(1), queries = q.size(2), d = q.size(3);
  require(static_cast<int64_t>(lengths.size()) == batch,
          "lengths has " + std::to_string(lengths.size()) + " entries for " +
              std::to_string(batch) + " requests");
  auto per_request = [&](size_t size, const char* name) {
    require(size == 0 || size == lengths.size(),
            std::string(name) + " budget needs one value per request or none");
  };
  per_request(o.windows.size(), "window");
  per_request(o.rungs.size(), "rungs");
  per_request(o.mass.size(), "mass");

  const auto alpha = per_head(o.entmax_alpha, heads, "entmax_alpha");
  const auto delta = per_head(o.delta, heads, "delta"), beta = per_head(o.beta, heads, "beta"),
             gamma = per_head(o.gamma, heads, "gamma");
  const auto slopes = per_head(o.alibi_slopes, heads, "alibi_slopes");

  kernels::DecodeAttentionParams p;
  p.batch = batch;
  p.heads = heads;
  p.kv_heads = key_buffer.size(1);
  p.head_dim = d;
  p.capacity = key_buffer.size(2);
  p.lengths = lengths.data();
  p.queries = queries;
  p.window = o.window;
  p.offsets = o.offsets.data();
  p.num_offsets = static_cast<int64_t>(o.offsets.size());
  p.scale = o.scale.value_or(1.0 / std::sqrt(static_cast<double>(d)));
  p.windows = o.windows.empty() ? nullptr : o.windows.data();
  p.rung_limits = o.rungs.empty() ? nullptr : o.rungs.data();
  p.mass = o.mass.empty() ? nullptr : o.mass.data();
  p.entmax = o.entmax;
  p.entmax_alpha = data_or_null(alpha);
  p.log_n_scaling = delta.defined();
  p.delta = data_or_null(delta);
  p.beta = data_or_null(beta);
  p.gamma = data_or_null(gamma);
  p.alibi_slopes = data_or_null(slopes);

  const auto qc = q.contiguous();
  DecodeAttentionResult result{torch::empty_like(qc),
                               std::vector<int64_t>(static_cast<size_t>(batch * heads * queries))};
  if (q.scalar_type() == torch::kFloat64) {
    kernels::decode_attention_cpu<double>(p, qc.data_ptr<double>(), key_buffer.data_ptr<double>(),
                                          value_buffer.data_ptr<double>(),
                                          result.out.data_ptr<double>(), result.keys_read.data());
  } else {
    kernels::decode_attention_cpu<float>(p, qc.data_ptr<float>(), key_buffer.data_ptr<float>(),
                                         value_buffer.data_ptr<float>(),
                                         result.out.data_ptr<float>(), result.keys_read.data());
  }
  return result;
}

}  // namespace reach::ops
