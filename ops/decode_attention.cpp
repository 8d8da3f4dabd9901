#include "ops/decode_attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/cpu/decode_attention.hpp"
#ifdef REACH_DECODE_ATTENTION_CUDA
#include "kernels/cuda/decode_attention.hpp"  // kDecodeMaxOffsets (no CUDA headers)
#include "ops/decode_attention_cuda.hpp"
#endif

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

// Dense causal attention over one length, one query per request, no distance bias nor log-n
// scaling: what SDPA (FlashAttention) computes, the usual dense baseline (LibTorch >= 2.5;
// unused by a build without either).
[[maybe_unused]] bool sdpa_takes(const torch::Tensor& q, const std::vector<int64_t>& lengths,
                                 const DecodeAttentionOptions& o) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
  if (!o.offsets.empty() || o.alibi_slopes.defined() || o.delta.defined() || q.size(2) != 1) {
    return false;
  }
  for (size_t b = 0; b < lengths.size(); ++b) {
    const int64_t window = o.windows.empty() ? o.window : o.windows[b];
    if (window < lengths[b] || lengths[b] != lengths.front()) return false;
  }
  return true;
#else
  (void)q, (void)lengths, (void)o;
  return false;
#endif
}

// The slots each (request, head, query) reads under p: the window's and the visible offsets'
// (every softmax weight is positive), as the CUDA kernel reads them (unused without it).
[[maybe_unused]] std::vector<int64_t> slots_read(const kernels::DecodeAttentionParams& p) {
  std::vector<int64_t> read(static_cast<size_t>(p.batch * p.heads * p.queries));
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t window = p.window_of(b), rungs = p.rungs_of(b);
    for (int64_t i = 0; i < p.queries; ++i) {
      const int64_t t = p.lengths[b] - p.queries + i;
      int64_t seen = std::min(window, t + 1);
      for (int64_t k = 0; k < rungs; ++k) {
        const double x = p.offsets[k];
        if (x >= static_cast<double>(window) && x <= static_cast<double>(t)) ++seen;
      }
      for (int64_t h = 0; h < p.heads; ++h) {
        read[static_cast<size_t>((b * p.heads + h) * p.queries + i)] = seen;
      }
    }
  }
  return read;
}

// On a GPU, the same contract through tensor ops (no custom kernel; what the CUDA kernel does
// not take: float64, fractional offsets): each query's key set,
// at most max W_b + K slots, as row indices built on the host (the positions depend only
// on the lengths and the budgets), gathered from the cache in one gather per operand,
// fractional offsets as two gathers blended; one masked softmax over the slots in float32.
// Work and traffic per token O((W + K) d), independent of the context length. Dense causal
// attention over equal lengths (one request) goes to SDPA instead, the usual dense baseline.
// Entmax and the dynamic mass budget are CPU-only (decode_attention_supported).
DecodeAttentionResult decode_attention_tensor_ops(const torch::Tensor& q, const torch::Tensor& kb,
                                                  const torch::Tensor& vb,
                                                  const std::vector<int64_t>& lengths,
                                                  const DecodeAttentionOptions& o, double scale) {
  const int64_t batch = q.size(0), heads = q.size(1), queries = q.size(2), d = q.size(3);
  const int64_t kv_heads = kb.size(1), group = heads / kv_heads;
  const auto num_offsets = static_cast<int64_t>(o.offsets.size());
  auto window_of = [&](int64_t b) {
    return o.windows.empty() ? o.window : o.windows[static_cast<size_t>(b)];
  };
  auto rungs_of = [&](int64_t b) {
    return o.rungs.empty() ? num_offsets : o.rungs[static_cast<size_t>(b)];
  };
  int64_t window_slots = 0;
  for (int64_t b = 0; b < batch; ++b) {
    window_slots = std::max(window_slots, std::min(window_of(b), lengths[static_cast<size_t>(b)]));
  }
  DecodeAttentionResult result;
  result.keys_read.resize(static_cast<size_t>(batch * heads * queries));
  result.path = DecodeAttentionPath::cuda_tensor_ops;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
  if (sdpa_takes(q, lengths, o)) {
    result.path = DecodeAttentionPath::cuda_sdpa;
    const int64_t n = lengths.front();
    // Not cuDNN's attention: it builds an execution plan per sequence length, and a decode
    // step's length is new every step (measured: ~9 ms per layer and step on an H200, against
    // 0.05 ms for the same call at a repeated shape); FlashAttention's kernel needs no plan.
    auto& context = at::globalContext();
    const bool cudnn = context.userEnabledCuDNNSDP();
    context.setSDPUseCuDNN(false);
    try {
      result.out = at::scaled_dot_product_attention(q, kb.narrow(2, 0, n), vb.narrow(2, 0, n), {},
                                                    0.0, false, scale, group > 1);
    } catch (...) {
      context.setSDPUseCuDNN(cudnn);
      throw;
    }
    context.setSDPUseCuDNN(cudnn);
    std::fill(result.keys_read.begin(), result.keys_read.end(), n);
    return result;
  }
#endif
  const int64_t slots = window_slots + num_offsets, cells = batch * queries * slots;
  // float32 arithmetic for 16- and 32-bit inputs, float64 for float64 (the reference check).
  const auto compute = q.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  // Two host buffers, pinned, so each goes to the GPU in one asynchronous copy: the rows
  // [2, B, Q, S] (a slot's row, and the next-older row a fractional offset blends in), and
  // in the compute type [blend | distance | visible | visible slots per query].
  const auto pinned = torch::cuda::is_available();
  auto host_rows =
      torch::zeros({2 * cells}, torch::TensorOptions().dtype(torch::kLong).pinned_memory(pinned));
  auto host_floats =
      torch::zeros({3 * cells + batch * queries},
                   torch::TensorOptions().dtype(torch::kFloat64).pinned_memory(pinned));
  auto* r0 = host_rows.data_ptr<int64_t>();
  auto* r1 = r0 + cells;
  auto* f = host_floats.data_ptr<double>();
  auto* dist = f + cells;
  auto* vis = f + 2 * cells;
  auto* count = f + 3 * cells;
  bool fractional = false;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t wb = window_of(b), kb_rungs = rungs_of(b);
    for (int64_t i = 0; i < queries; ++i) {
      const int64_t t = lengths[static_cast<size_t>(b)] - queries + i;
      const int64_t base = (b * queries + i) * slots;
      int64_t seen = 0;
      for (int64_t w = 0; w < window_slots; ++w) {
        if (w >= wb || w > t) continue;
        r0[base + w] = t - w;
        dist[base + w] = static_cast<double>(w);
        vis[base + w] = 1.0;
        ++seen;
      }
      for (int64_t k = 0; k < num_offsets; ++k) {
        const double x = o.offsets[static_cast<size_t>(k)];
        if (k >= kb_rungs || x < static_cast<double>(wb) || static_cast<double>(t) < std::ceil(x)) {
          continue;
        }
        const auto whole = static_cast<int64_t>(std::floor(x));
        const int64_t at = base + window_slots + k;
        r0[at] = t - whole;
        r1[at] = std::max<int64_t>(t - whole - 1, 0);
        f[at] = x - static_cast<double>(whole);
        fractional = fractional || f[at] != 0.0;
        dist[at] = x;
        vis[at] = 1.0;
        ++seen;
      }
      count[b * queries + i] = static_cast<double>(seen);
      for (int64_t h = 0; h < heads; ++h) {
        result.keys_read[static_cast<size_t>((b * heads + h) * queries + i)] = seen;
      }
    }
  }
  const auto device_rows = host_rows.to(q.device(), /*non_blocking=*/true);
  const auto device_floats = host_floats.to(q.device(), /*non_blocking=*/true).to(compute);
  const auto row0 = device_rows.narrow(0, 0, cells), row1 = device_rows.narrow(0, cells, cells);
  const auto blend = device_floats.narrow(0, 0, cells);
  const auto distance = device_floats.narrow(0, cells, cells);
  const auto visible = device_floats.narrow(0, 2 * cells, cells);
  const auto visible_count = device_floats.narrow(0, 3 * cells, batch * queries);
  const auto device = q.device();
  auto gather_rows = [&](const torch::Tensor& buffer, const torch::Tensor& rows) {
    const auto index =
        rows.view({batch, 1, queries * slots, 1}).expand({batch, kv_heads, queries * slots, d});
    return buffer.gather(2, index).to(compute);  // [B, Hkv, Q * S, d]
  };
  auto keys = gather_rows(kb, row0), values = gather_rows(vb, row0);
  if (fractional) {
    const auto w = blend.view({batch, 1, queries * slots, 1});
    keys = keys + w * (gather_rows(kb, row1) - keys);
    values = values + w * (gather_rows(vb, row1) - values);
  }
  // Query head h = kv * group + g reads kv head kv.
  const auto qg = q.to(compute).view({batch, kv_heads, group, queries, 1, d});
  keys = keys.view({batch, kv_heads, 1, queries, slots, d});
  values = values.view({batch, kv_heads, 1, queries, slots, d});
  auto scores = torch::matmul(qg, keys.transpose(-1, -2)) * scale;  // [B, Hkv, G, Q, 1, S]
  auto per_head_view = [&](const torch::Tensor& t) {
    return t.to(device, compute).view({1, kv_heads, group, 1, 1, 1});
  };
  if (o.delta.defined()) {
    // c = delta + beta * log(n + 1)^gamma, n the visible slots of the query.
    const auto logn = torch::log(visible_count + 1.0).view({batch, 1, 1, queries, 1, 1});
    scores = scores * (per_head_view(o.delta) +
                       per_head_view(o.beta) * torch::pow(logn, per_head_view(o.gamma)));
  }
  if (o.alibi_slopes.defined()) {
    scores =
        scores - per_head_view(o.alibi_slopes) * distance.view({batch, 1, 1, queries, 1, slots});
  }
  scores = scores.masked_fill(visible.view({batch, 1, 1, queries, 1, slots}) == 0,
                              -std::numeric_limits<double>::infinity());
  const auto out = torch::matmul(torch::softmax(scores, -1), values);  // [B, Hkv, G, Q, 1, d]
  result.out = out.view({batch, heads, queries, d}).to(q.scalar_type());
  return result;
}

}  // namespace

const torch::Tensor& DecodeLengths::on(const torch::Device& device,
                                       const std::vector<int64_t>& lengths) {
  // A device without an index (torch::kCUDA) means the current one, where device_ lives.
  const bool same_device = device_.defined() && device_.device().type() == device.type() &&
                           (!device.has_index() || device_.device().index() == device.index());
  if (same_device && host_ == lengths) return device_;
  const bool pinned = device.is_cuda();
  auto host = torch::empty({static_cast<int64_t>(lengths.size())},
                           torch::TensorOptions().dtype(torch::kInt).pinned_memory(pinned));
  auto* h = host.data_ptr<int32_t>();
  for (size_t b = 0; b < lengths.size(); ++b) {
    require(lengths[b] >= 0 && lengths[b] <= std::numeric_limits<int32_t>::max(),
            "length " + std::to_string(lengths[b]) + " of request " + std::to_string(b) +
                " does not fit the device lengths (int32)");
    h[b] = static_cast<int32_t>(lengths[b]);
  }
  // Asynchronous from pinned memory: the host buffer stays allocated until the copy is done
  // (the caching host allocator records the copy's stream).
  device_ = host.to(device, /*non_blocking=*/pinned);
  host_ = lengths;
  return device_;
}

bool decode_attention_has_cuda_kernel() {
#ifdef REACH_DECODE_ATTENTION_CUDA
  return true;
#else
  return false;
#endif
}

bool decode_attention_supported(const torch::Device& device, const DecodeAttentionOptions& o) {
  if (device.is_cpu()) return true;
  return device.is_cuda() && !o.entmax && o.mass.empty();
}

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
  require(q.device() == key_buffer.device() && q.device() == value_buffer.device(),
          "q and the cache buffers must be on one device");
  require(q.device().is_cpu() || q.device().is_cuda(),
          "tensors must be on the CPU or a CUDA GPU, got " + q.device().str());
  require(!o.lengths_are_bounds || q.device().is_cuda(),
          "lengths_are_bounds (device lengths) is for CUDA tensors, got " + q.device().str());
  if (q.device().is_cuda()) {
    require(decode_attention_supported(q.device(), o),
            "entmax and the dynamic mass budget decode on the CPU only (the GPU path is "
            "softmax with fixed budgets)");
    require(q.scalar_type() == key_buffer.scalar_type() &&
                q.scalar_type() == value_buffer.scalar_type() &&
                (q.scalar_type() == torch::kFloat32 || q.scalar_type() == torch::kFloat64 ||
                 q.scalar_type() == torch::kBFloat16),
            "q and the cache must share one dtype, bfloat16, float32 or float64");
  } else {
    require(q.scalar_type() == key_buffer.scalar_type() &&
                q.scalar_type() == value_buffer.scalar_type() &&
                (q.scalar_type() == torch::kFloat32 || q.scalar_type() == torch::kFloat64),
            "q and the cache must share one dtype, float32 or float64");
  }
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

  if (q.device().is_cuda()) {
    require(p.kv_heads >= 1 && heads % p.kv_heads == 0, "kv_heads must divide heads, got " +
                                                            std::to_string(p.kv_heads) + " and " +
                                                            std::to_string(heads));
    for (size_t b = 0; b < lengths.size(); ++b) {
      require(lengths[b] >= queries && lengths[b] <= p.capacity,
              "request " + std::to_string(b) + " has length " + std::to_string(lengths[b]) +
                  ", outside " + std::to_string(queries) + ".." + std::to_string(p.capacity));
    }
    if (const auto problem = kernels::validate_decode_params(p); !problem.empty()) {
      require(false, problem);
    }
    const auto& dl = o.device_lengths;
    require(!dl.defined() || (dl.device() == q.device() && dl.scalar_type() == torch::kInt &&
                              dl.numel() == batch && dl.is_contiguous()),
            "device_lengths must be contiguous int32 [batch] on q's device");
    const auto qc = q.contiguous();
    if (o.lengths_are_bounds) {
      require(dl.defined(), "lengths_are_bounds needs device_lengths (the true lengths)");
#ifdef REACH_DECODE_ATTENTION_CUDA
      require(decode_cuda::kernel_takes(qc, o, p.capacity),
              "lengths_are_bounds runs the CUDA decode kernel only, which takes bfloat16 or "
              "float32 softmax key sets with integer offsets (at most " +
                  std::to_string(kernels::gpu::kDecodeMaxOffsets) +
                  ") and head_dim <= " + std::to_string(kernels::gpu::kDecodeMaxHeadDim));
      DecodeAttentionResult result;
      result.out = decode_cuda::forward(qc, key_buffer, value_buffer, lengths, o, p.scale);
      result.path = DecodeAttentionPath::cuda_kernel;
      return result;
#else
      require(false, "lengths_are_bounds needs the CUDA decode kernel, which this build lacks");
#endif
    }
#ifdef REACH_DECODE_ATTENTION_CUDA
    if (!sdpa_takes(qc, lengths, o) && decode_cuda::kernel_takes(qc, o, p.capacity)) {
      DecodeAttentionResult result;
      result.out = decode_cuda::forward(qc, key_buffer, value_buffer, lengths, o, p.scale);
      result.keys_read = slots_read(p);
      result.path = DecodeAttentionPath::cuda_kernel;
      return result;
    }
#endif
    return decode_attention_tensor_ops(qc, key_buffer, value_buffer, lengths, o, p.scale);
  }
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
