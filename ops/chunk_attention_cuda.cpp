// CUDA implementations of the reach::chunk_attention_forward / _backward ops (declared in
// ops/chunk_attention.cpp). Compiled only when the LibTorch found has CUDA; the kernels live
// torch-free in kernels/cuda. Saved weights and lse are float32 for every input dtype.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>
#include <torch/torch.h>

#include "kernels/cuda/chunk_attention.hpp"
#include "ops/chunk_attention.hpp"

namespace reach::ops {
namespace {

using torch::Tensor;

constexpr const char* kName = "chunk_attention (CUDA)";

kernels::gpu::ScalarType cuda_type(const Tensor& q) {
  TORCH_CHECK(q.scalar_type() == torch::kFloat32 || q.scalar_type() == torch::kBFloat16, kName,
              ": dtype must be float32 or bfloat16 on CUDA, got ", q.scalar_type());
  return q.scalar_type() == torch::kBFloat16 ? kernels::gpu::ScalarType::kBFloat16
                                             : kernels::gpu::ScalarType::kFloat32;
}

kernels::ChunkAttentionParams cuda_params(const Tensor& q, const Tensor& k, const Tensor& r,
                                          int64_t chunk_size, int64_t top_k, int64_t window,
                                          c10::string_view budget, double fraction, int64_t min_k,
                                          c10::string_view weighting, double scale,
                                          double retrieval_scale) {
  kernels::ChunkAttentionParams p;
  p.batch = q.size(0);
  p.query_heads = q.size(1);
  p.kv_heads = k.size(1);
  p.seq_len = q.size(2);
  p.head_dim = q.size(3);
  p.retrieval_dim = r.size(3);
  try {
    p.selection = {
        chunk_size, top_k,
        window,     pattern::parse_chunk_budget_rule(std::string(budget.data(), budget.size())),
        fraction,   min_k};
    p.weighting = kernels::parse_chunk_weighting(std::string(weighting.data(), weighting.size()));
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK(false, kName, ": ", e.what());
  }
  p.scale = scale;
  p.retrieval_scale = retrieval_scale;
  const std::string problem = kernels::validate_chunk_params(p);
  TORCH_CHECK(problem.empty(), kName, ": ", problem);
  const std::string unsupported = kernels::gpu::chunk_cuda_support_problem(p);
  TORCH_CHECK(unsupported.empty(), kName, ": ", unsupported);
  return p;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> forward_cuda(const Tensor& q_in, const Tensor& k_in,
                                                        const Tensor& v_in, const Tensor& r_in,
                                                        const Tensor& l_in, int64_t chunk_size,
                                                        int64_t top_k, int64_t window,
                                                        c10::string_view budget, double fraction,
                                                        int64_t min_k, c10::string_view weighting,
                                                        double scale, double retrieval_scale) {
  const auto type = cuda_type(q_in);
  const c10::cuda::CUDAGuard guard(q_in.device());
  const Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous(),
               r = r_in.contiguous(), l = l_in.contiguous();
  const auto p = cuda_params(q, k, r, chunk_size, top_k, window, budget, fraction, min_k, weighting,
                             scale, retrieval_scale);
  Tensor out = torch::empty_like(q);
  const auto f32 = q.options().dtype(torch::kFloat);
  Tensor indices =
      torch::empty({p.batch, p.kv_heads, p.seq_len, top_k}, q.options().dtype(torch::kLong));
  Tensor weights = torch::empty({p.batch, p.kv_heads, p.seq_len, top_k}, f32);
  Tensor lse = torch::empty({p.batch, p.query_heads, p.seq_len, top_k}, f32);
  // The tensor-core path's scratch (sorted chunk lists, per-slot partials) from torch's
  // caching allocator.
  const auto bytes = kernels::gpu::chunk_attention_forward_workspace_bytes(p, type, false);
  Tensor workspace =
      torch::empty({static_cast<int64_t>(bytes / 4 + 4)}, q.options().dtype(torch::kFloat));
  kernels::gpu::chunk_attention_forward_cuda(
      p, type, q.data_ptr(), k.data_ptr(), v.data_ptr(), r.data_ptr(), l.data_ptr(), out.data_ptr(),
      indices.data_ptr<int64_t>(), weights.data_ptr<float>(), lse.data_ptr<float>(),
      workspace.data_ptr(), at::cuda::getCurrentCUDAStream().stream());
  return {out, indices, weights, lse};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> backward_cuda(
    const Tensor& grad_out, const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
    const Tensor& r_in, const Tensor& l_in, const Tensor& indices_in, const Tensor& weights_in,
    const Tensor& lse_in, int64_t chunk_size, int64_t top_k, int64_t window,
    c10::string_view budget, double fraction, int64_t min_k, c10::string_view weighting,
    double scale, double retrieval_scale) {
  const auto type = cuda_type(q_in);
  const c10::cuda::CUDAGuard guard(q_in.device());
  const Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous(),
               r = r_in.contiguous(), l = l_in.contiguous();
  const Tensor go = grad_out.to(q.scalar_type()).contiguous();
  const Tensor indices = indices_in.to(torch::kLong).contiguous();
  const Tensor weights = weights_in.to(torch::kFloat).contiguous();
  const Tensor lse = lse_in.to(torch::kFloat).contiguous();
  const auto p = cuda_params(q, k, r, chunk_size, top_k, window, budget, fraction, min_k, weighting,
                             scale, retrieval_scale);
  TORCH_CHECK(indices.sizes() == torch::IntArrayRef({p.batch, p.kv_heads, p.seq_len, top_k}), kName,
              ": saved indices must be [B, Hkv, n, top_k], got ", indices.sizes());
  Tensor dq = torch::empty_like(q), dk = torch::empty_like(k), dv = torch::empty_like(v),
         dr = torch::empty_like(r), dl = torch::empty_like(l);
  const auto bytes = kernels::gpu::chunk_attention_backward_workspace_bytes(p, type);
  Tensor workspace =
      torch::empty({static_cast<int64_t>(bytes / 4 + 4)}, q.options().dtype(torch::kFloat));
  kernels::gpu::chunk_attention_backward_cuda(
      p, type, q.data_ptr(), k.data_ptr(), v.data_ptr(), r.data_ptr(), l.data_ptr(), go.data_ptr(),
      indices.data_ptr<int64_t>(), weights.data_ptr<float>(), lse.data_ptr<float>(), dq.data_ptr(),
      dk.data_ptr(), dv.data_ptr(), dr.data_ptr(), dl.data_ptr(), workspace.data_ptr(),
      at::cuda::getCurrentCUDAStream().stream());
  return {dq, dk, dv, dr, dl};
}

}  // namespace
}  // namespace reach::ops

TORCH_LIBRARY_IMPL(reach, CUDA, m) {
  m.impl("chunk_attention_forward", &reach::ops::forward_cuda);
  m.impl("chunk_attention_backward", &reach::ops::backward_cuda);
}
