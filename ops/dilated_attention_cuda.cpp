// CUDA implementations of the reach::dilated_attention_forward / _backward ops
// (declared in ops/dilated_attention.cpp). Compiled only when the LibTorch found
// has CUDA; the kernels themselves live torch-free in kernels/cuda.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/dilated_attention.hpp"
#include "ops/dilated_attention.hpp"

namespace reach::ops {
namespace {

using torch::Tensor;

kernels::gpu::ScalarType check_cuda_inputs(const Tensor& q, const Tensor& k, const Tensor& v) {
  TORCH_CHECK(q.dim() == 4,
              "dilated_attention: q must have rank 4 [batch, heads, n, head_dim], "
              "got rank ",
              q.dim());
  TORCH_CHECK(k.dim() == 4 && k.sizes() == v.sizes() && k.size(0) == q.size(0) &&
                  k.size(2) == q.size(2) && k.size(3) == q.size(3) && k.size(1) >= 1 &&
                  q.size(1) % k.size(1) == 0,
              "dilated_attention: k and v must be [batch, kv_heads, n, head_dim] with q's batch, "
              "n and head_dim and kv_heads dividing q's heads, got q ",
              q.sizes(), ", k ", k.sizes(), ", v ", v.sizes());
  TORCH_CHECK(k.device() == q.device() && v.device() == q.device(),
              "dilated_attention: q, k and v must be on one device");
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "dilated_attention: q, k and v must share one dtype");
  TORCH_CHECK(q.scalar_type() == torch::kFloat32 || q.scalar_type() == torch::kBFloat16,
              "dilated_attention: on CUDA the dtype must be float32 or bfloat16, got ",
              q.scalar_type());
  TORCH_CHECK(q.numel() > 0, "dilated_attention: empty input (shape ", q.sizes(), ")");
  return q.scalar_type() == torch::kBFloat16 ? kernels::gpu::ScalarType::kBFloat16
                                             : kernels::gpu::ScalarType::kFloat32;
}

// Offsets travel to the kernels by value, so they are read on the host.
Tensor host_offsets(const Tensor& offsets) {
  TORCH_CHECK(offsets.defined() && offsets.dim() == 1 && offsets.is_floating_point(),
              "dilated_attention: offsets must be a 1-D floating-point tensor");
  return offsets.detach().to(torch::kCPU, torch::kFloat64).contiguous();
}

// The kernels are built for head_dim 64 and 128 (their tiles); a smaller head_dim is zero-padded
// up to the next of those, which is exact: zero columns add nothing to q.k, and the zero columns
// of v give zero output columns, sliced off. It costs the padded width's compute, which small
// models (head_dim 16 or 32) can afford; head_dim > 128 stays an error.
int64_t kernel_head_dim(int64_t head_dim) {
  if (head_dim <= 64) return 64;
  return head_dim <= 128 ? 128 : head_dim;
}

Tensor padded_head_dim(const Tensor& t, int64_t width) {
  if (t.size(3) == width) return t.contiguous();
  return torch::constant_pad_nd(t, {0, width - t.size(3)}).contiguous();
}

Tensor unpadded_head_dim(const Tensor& t, int64_t head_dim) {
  return t.size(3) == head_dim ? t : t.narrow(3, 0, head_dim).contiguous();
}

kernels::DilatedAttentionParams cuda_params(const Tensor& q, const Tensor& k, int64_t window,
                                            const Tensor& off, double scale) {
  kernels::DilatedAttentionParams p;
  p.batch_heads = q.size(0) * q.size(1);
  p.kv_group = q.size(1) / k.size(1);
  p.seq_len = q.size(2);
  p.head_dim = q.size(3);
  p.window = window;
  p.offsets = off.data_ptr<double>();
  p.num_offsets = off.numel();
  p.scale = scale;
  const std::string problem = kernels::validate_params(p);
  TORCH_CHECK(problem.empty(), "dilated_attention: ", problem);
  const std::string unsupported = kernels::gpu::cuda_support_problem(p);
  TORCH_CHECK(unsupported.empty(), "dilated_attention (CUDA): ", unsupported);
  return p;
}

std::tuple<Tensor, Tensor> forward_cuda(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                        int64_t window, const Tensor& offsets,
                                        c10::optional<double> scale, bool token_major_out) {
  const auto type = check_cuda_inputs(q_in, k_in, v_in);
  const c10::cuda::CUDAGuard guard(q_in.device());
  const int64_t head_dim = q_in.size(3), width = kernel_head_dim(head_dim);
  const Tensor q = padded_head_dim(q_in, width), k = padded_head_dim(k_in, width),
               v = padded_head_dim(v_in, width);
  const Tensor off = host_offsets(offsets);
  auto p = cuda_params(q, k, window, off,
                       scale.value_or(1.0 / std::sqrt(static_cast<double>(head_dim))));
  // The tensor-core kernel writes a token-major output in place; elsewhere (float32, a padded
  // head_dim) it is the heads-first result, copied.
  const bool in_place = token_major_out && width == head_dim &&
                        kernels::gpu::dilated_attention_uses_tensor_cores(p, type, false);
  Tensor out =
      in_place
          ? torch::empty({q.size(0), q.size(2), q.size(1), q.size(3)}, q.options()).transpose(1, 2)
          : torch::empty_like(q);
  if (in_place) p.out_heads = q.size(1);
  Tensor lse = torch::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(torch::kFloat));
  kernels::gpu::dilated_attention_forward_cuda(p, type, q.data_ptr(), k.data_ptr(), v.data_ptr(),
                                               out.data_ptr(), lse.data_ptr<float>(),
                                               at::cuda::getCurrentCUDAStream().stream());
  out = unpadded_head_dim(out, head_dim);
  if (token_major_out && !in_place && !is_token_major(out)) out = token_major_copy(out);
  return {out, lse};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> backward_cuda(
    const Tensor& grad_out_in, const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
    const Tensor& out_in, const Tensor& lse_in, int64_t window, const Tensor& offsets,
    c10::optional<double> scale, bool need_offsets_grad) {
  const auto type = check_cuda_inputs(q_in, k_in, v_in);
  TORCH_CHECK(grad_out_in.sizes() == q_in.sizes() && out_in.sizes() == q_in.sizes(),
              "dilated_attention backward: grad_out ", grad_out_in.sizes(), " and out ",
              out_in.sizes(), " must match q ", q_in.sizes());
  TORCH_CHECK(lse_in.numel() == q_in.size(0) * q_in.size(1) * q_in.size(2),
              "dilated_attention backward: lse must have batch * heads * n elements");
  const c10::cuda::CUDAGuard guard(q_in.device());
  const int64_t head_dim = q_in.size(3), width = kernel_head_dim(head_dim);
  const Tensor q = padded_head_dim(q_in, width), k = padded_head_dim(k_in, width),
               v = padded_head_dim(v_in, width);
  const Tensor lse = lse_in.to(torch::kFloat).contiguous();
  const Tensor off = host_offsets(offsets);
  auto p = cuda_params(q, k, window, off,
                       scale.value_or(1.0 / std::sqrt(static_cast<double>(head_dim))));
  // A token-major gradient (the output projection's, when the forward wrote token-major) is
  // read in place by the tensor-core kernels, with out in the same layout; otherwise both
  // become heads-first copies.
  const bool in_place =
      width == head_dim && q.size(1) > 1 && is_token_major(grad_out_in) &&
      grad_out_in.scalar_type() == q.scalar_type() &&
      reinterpret_cast<uintptr_t>(grad_out_in.data_ptr()) % 16 == 0 &&
      kernels::gpu::dilated_attention_uses_tensor_cores(p, type, need_offsets_grad);
  Tensor out, grad_out;
  if (in_place) {
    p.out_heads = q.size(1);
    grad_out = grad_out_in;
    out = out_in.to(q.scalar_type());
    if (!is_token_major(out)) out = token_major_copy(out);
  } else {
    out = padded_head_dim(out_in.to(q.scalar_type()), width);
    grad_out = padded_head_dim(grad_out_in.to(q.scalar_type()), width);
  }
  // The kernels write dK and dV per query head; with grouped-query attention each group's
  // heads are summed into their shared K/V head's gradient below (K and V themselves are
  // read in place, never copied per query head).
  Tensor dq = torch::empty_like(q), dk = torch::empty_like(q), dv = torch::empty_like(q);
  Tensor doff = torch::zeros({off.numel()}, q.options().dtype(torch::kFloat64));
  const auto bytes =
      kernels::gpu::dilated_attention_backward_workspace_bytes(p, type, need_offsets_grad);
  Tensor workspace =
      torch::empty({static_cast<int64_t>(bytes / 4 + 4)}, q.options().dtype(torch::kFloat));
  kernels::gpu::dilated_attention_backward_cuda(
      p, type, q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr<float>(),
      grad_out.data_ptr(), dq.data_ptr(), dk.data_ptr(), dv.data_ptr(),
      need_offsets_grad ? doff.data_ptr<double>() : nullptr, workspace.data_ptr(),
      at::cuda::getCurrentCUDAStream().stream());
  // d offsets on q's device, like the other gradients: the autograd functions move it where
  // the offsets live when that is wanted (a copy to the host would wait for the GPU).
  if (p.kv_group > 1) {
    const auto grouped = [&](const Tensor& g) {
      return g.view({k.size(0), k.size(1), p.kv_group, k.size(2), k.size(3)})
          .sum(2, /*keepdim=*/false, torch::kFloat)
          .to(k.scalar_type());
    };
    dk = grouped(dk);
    dv = grouped(dv);
  }
  return {unpadded_head_dim(dq, head_dim), unpadded_head_dim(dk, head_dim),
          unpadded_head_dim(dv, head_dim), doff};
}

}  // namespace
}  // namespace reach::ops

TORCH_LIBRARY_IMPL(reach, CUDA, m) {
  m.impl("dilated_attention_forward", &reach::ops::forward_cuda);
  m.impl("dilated_attention_backward", &reach::ops::backward_cuda);
}
