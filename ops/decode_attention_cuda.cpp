// CUDA implementation behind ops::decode_attention (see ops/decode_attention_cuda.hpp).
#include "ops/decode_attention_cuda.hpp"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/cuda/decode_attention.hpp"

namespace reach::ops::decode_cuda {
namespace {

constexpr int64_t kMaxInt = std::numeric_limits<int32_t>::max();

// A per-head parameter as contiguous float64 on q's device (a no-op when it already is).
torch::Tensor on_device(const torch::Tensor& t, const torch::Tensor& q) {
  return t.defined() ? t.detach().to(q.device(), torch::kFloat64).contiguous() : t;
}

const double* pointer(const torch::Tensor& t) {
  return t.defined() ? t.data_ptr<double>() : nullptr;
}

// Per-request windows and rungs as one int32 tensor [2, batch] on the device, sent in one
// asynchronous copy from pinned memory (a row is unused when its budget is not given).
torch::Tensor budgets_on_device(const DecodeAttentionOptions& o, int64_t batch,
                                const torch::Device& device) {
  auto host =
      torch::zeros({2, batch}, torch::TensorOptions().dtype(torch::kInt).pinned_memory(true));
  auto* w = host.data_ptr<int32_t>();
  auto* k = w + batch;
  for (int64_t b = 0; b < batch; ++b) {
    const auto u = static_cast<size_t>(b);
    if (!o.windows.empty()) w[b] = static_cast<int32_t>(std::min(o.windows[u], kMaxInt));
    if (!o.rungs.empty()) k[b] = static_cast<int32_t>(o.rungs[u]);
  }
  return host.to(device, /*non_blocking=*/true);
}

}  // namespace

bool kernel_takes(const torch::Tensor& q, const DecodeAttentionOptions& o, int64_t capacity) {
  if (q.scalar_type() != torch::kBFloat16 && q.scalar_type() != torch::kFloat32) return false;
  if (o.entmax || !o.mass.empty()) return false;
  if (q.size(3) > kernels::gpu::kDecodeMaxHeadDim) return false;
  if (static_cast<int64_t>(o.offsets.size()) > kernels::gpu::kDecodeMaxOffsets) return false;
  if (capacity > kMaxInt) return false;
  for (const double x : o.offsets) {
    if (x != std::floor(x) || x > static_cast<double>(kMaxInt)) return false;  // learned, unfrozen
  }
  return q.size(0) * q.size(1) * q.size(2) <= kMaxInt;
}

torch::Tensor forward(const torch::Tensor& q, const torch::Tensor& key_buffer,
                      const torch::Tensor& value_buffer, const std::vector<int64_t>& lengths,
                      const DecodeAttentionOptions& o, double scale) {
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t batch = q.size(0);
  kernels::gpu::DecodeAttentionCudaArgs a;
  a.batch = batch;
  a.heads = q.size(1);
  a.kv_heads = key_buffer.size(1);
  a.head_dim = q.size(3);
  a.capacity = key_buffer.size(2);
  a.queries = q.size(2);
  a.max_length = *std::max_element(lengths.begin(), lengths.end());
  a.window = o.window;
  a.offsets = o.offsets.data();
  a.num_offsets = static_cast<int64_t>(o.offsets.size());
  a.scale = scale;

  torch::Tensor uploaded_lengths;
  if (!o.device_lengths.defined()) {
    DecodeLengths upload;
    uploaded_lengths = upload.on(q.device(), lengths);
  }
  const auto& device_lengths = o.device_lengths.defined() ? o.device_lengths : uploaded_lengths;
  a.lengths = device_lengths.data_ptr<int32_t>();

  torch::Tensor budgets;
  if (!o.windows.empty() || !o.rungs.empty()) {
    budgets = budgets_on_device(o, batch, q.device());
    if (!o.windows.empty()) {
      a.windows = budgets.data_ptr<int32_t>();
      a.max_window = std::max<int64_t>(*std::max_element(o.windows.begin(), o.windows.end()), 1);
    }
    if (!o.rungs.empty()) a.rung_limits = budgets.data_ptr<int32_t>() + batch;
  }
  const auto slopes = on_device(o.alibi_slopes, q);
  const auto delta = on_device(o.delta, q), beta = on_device(o.beta, q),
             gamma = on_device(o.gamma, q);
  a.alibi_slopes = pointer(slopes);
  a.log_n_scaling = delta.defined();
  a.delta = pointer(delta);
  a.beta = pointer(beta);
  a.gamma = pointer(gamma);

  auto out = torch::empty_like(q);
  const size_t workspace_bytes = kernels::gpu::decode_attention_workspace_bytes(a);
  torch::Tensor workspace;
  if (workspace_bytes > 0) {
    workspace = torch::empty({static_cast<int64_t>((workspace_bytes + 3) / 4)},
                             q.options().dtype(torch::kFloat32));
  }
  const auto type = q.scalar_type() == torch::kBFloat16 ? kernels::gpu::ScalarType::kBFloat16
                                                        : kernels::gpu::ScalarType::kFloat32;
  kernels::gpu::decode_attention_forward_cuda(a, type, q.data_ptr(), key_buffer.data_ptr(),
                                              value_buffer.data_ptr(), out.data_ptr(),
                                              workspace.defined() ? workspace.data_ptr() : nullptr,
                                              at::cuda::getCurrentCUDAStream().stream());
  return out;
}

}  // namespace reach::ops::decode_cuda
