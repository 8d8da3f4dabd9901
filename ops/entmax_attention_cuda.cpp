// CUDA implementation behind reach::entmax_attention (see ops/entmax_attention_cuda.hpp).
#include "ops/entmax_attention_cuda.hpp"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>
#include <stdexcept>

#include "kernels/cuda/entmax_attention.hpp"

namespace reach::ops::entmax_cuda {
namespace {

using torch::Tensor;

constexpr const char* kName = "entmax_attention (CUDA)";

kernels::gpu::ScalarType cuda_type(const Tensor& q) {
  TORCH_CHECK(q.scalar_type() == torch::kFloat32 || q.scalar_type() == torch::kBFloat16, kName,
              ": dtype must be float32 or bfloat16 on CUDA, got ", q.scalar_type());
  return q.scalar_type() == torch::kBFloat16 ? kernels::gpu::ScalarType::kBFloat16
                                             : kernels::gpu::ScalarType::kFloat32;
}

// Device float64 copies of the parameters, kept alive for one kernel call.
struct DeviceParameters {
  Tensor alpha, delta, beta, gamma, alibi;
  kernels::EntmaxAttentionParams params;
};

// What a parameter's values must satisfy (validate_entmax_params states it for the host).
enum class Valid { alpha, finite, slope };

// The parameter as the kernels read it: float64, contiguous, on q's device. Values that were on
// the host have been validated there; values that live on the device are not read back (a wait
// for the GPU in every layer's forward and backward): an invalid one becomes NaN on the device,
// so the output is NaN where it would otherwise be silently wrong (and a training run stops at
// its first non-finite loss). A few element-wise kernels on [heads] or [batch, heads, n].
Tensor on_device(const Tensor& t, const Tensor& q, Valid valid) {
  if (!t.defined() || t.numel() == 0) return Tensor();
  const bool checked_on_host = t.device().is_cpu();
  Tensor d = t.detach().to(q.device(), torch::kFloat64).contiguous();
  if (checked_on_host) return d;
  Tensor ok;
  switch (valid) {
    case Valid::alpha:
      ok = d.gt(1.0).logical_and(d.le(2.0));
      break;
    case Valid::finite:
      ok = d.isfinite();
      break;
    case Valid::slope:
      ok = d.isfinite().logical_and(d.ge(0.0));
      break;
  }
  return d.masked_fill(ok.logical_not(), std::numeric_limits<double>::quiet_NaN());
}

const double* pointer(const Tensor& t) { return t.defined() ? t.data_ptr<double>() : nullptr; }

DeviceParameters device_parameters(const Tensor& q, const kernels::EntmaxAttentionParams& host,
                                   const Parameters& given) {
  DeviceParameters d;
  d.params = host;
  d.alpha = host.softmax ? Tensor() : on_device(given.alpha, q, Valid::alpha);
  if (host.log_n_scaling) {
    d.delta = on_device(given.delta, q, Valid::finite);
    d.beta = on_device(given.beta, q, Valid::finite);
    d.gamma = on_device(given.gamma, q, Valid::finite);
  }
  d.alibi = on_device(given.alibi, q, Valid::slope);
  d.params.alpha = pointer(d.alpha);
  d.params.delta = pointer(d.delta);
  d.params.beta = pointer(d.beta);
  d.params.gamma = pointer(d.gamma);
  d.params.alibi_slopes = pointer(d.alibi);
  const std::string unsupported = kernels::gpu::entmax_cuda_support_problem(d.params);
  TORCH_CHECK(unsupported.empty(), kName, ": ", unsupported);
  return d;
}

template <typename F>
void run_kernel(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    TORCH_CHECK(false, e.what());
  }
}

}  // namespace

std::array<Tensor, 2> forward(const Tensor& q, const Tensor& k, const Tensor& v,
                              const kernels::EntmaxAttentionParams& host,
                              const Parameters& parameters, bool shape_sized_state) {
  const auto type = cuda_type(q);
  const c10::cuda::CUDAGuard guard(q.device());
  const auto d = device_parameters(q, host, parameters);
  Tensor out = torch::empty_like(q);
  const auto bytes = shape_sized_state ? kernels::gpu::entmax_attention_saved_bytes_for_shape(
                                             q.size(0) * q.size(1), q.size(2))
                                       : kernels::gpu::entmax_attention_saved_bytes(d.params);
  Tensor saved = torch::empty({static_cast<int64_t>(bytes)}, q.options().dtype(torch::kUInt8));
  run_kernel([&] {
    kernels::gpu::entmax_attention_forward_cuda(d.params, type, q.data_ptr(), k.data_ptr(),
                                                v.data_ptr(), out.data_ptr(), saved.data_ptr(),
                                                at::cuda::getCurrentCUDAStream().stream());
  });
  return {out, saved};
}

std::array<Tensor, 4> backward(const Tensor& q, const Tensor& k, const Tensor& v,
                               const Tensor& grad_out, const Tensor& saved,
                               const kernels::EntmaxAttentionParams& host,
                               const Parameters& parameters, bool want_row_grads) {
  const auto type = cuda_type(q);
  const c10::cuda::CUDAGuard guard(q.device());
  const auto d = device_parameters(q, host, parameters);
  Tensor dq = torch::empty_like(q), dk = torch::empty_like(k), dv = torch::empty_like(v);
  const int64_t rows = q.size(0) * q.size(1) * q.size(2);
  Tensor row_grads =
      want_row_grads ? torch::empty({4, rows}, q.options().dtype(torch::kFloat64)) : Tensor();
  const auto bytes = kernels::gpu::entmax_attention_backward_workspace_bytes(d.params);
  Tensor workspace = torch::empty({static_cast<int64_t>(bytes)}, q.options().dtype(torch::kUInt8));
  run_kernel([&] {
    kernels::gpu::entmax_attention_backward_cuda(
        d.params, type, q.data_ptr(), k.data_ptr(), v.data_ptr(), grad_out.data_ptr(),
        saved.data_ptr(), dq.data_ptr(), dk.data_ptr(), dv.data_ptr(),
        want_row_grads ? row_grads.data_ptr<double>() : nullptr, workspace.data_ptr(),
        at::cuda::getCurrentCUDAStream().stream());
  });
  return {dq, dk, dv, row_grads};
}

}  // namespace reach::ops::entmax_cuda

TORCH_LIBRARY_FRAGMENT(reach, m) {
  // The tile of entmax_attention_saved_bytes_for_shape, for python/reach's fake forward.
  m.def("entmax_attention_state_tile() -> int",
        []() -> int64_t { return reach::kernels::gpu::entmax_attention_tile(); });
}
