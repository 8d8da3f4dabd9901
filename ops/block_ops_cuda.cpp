// The fused block ops on CUDA (ops/block_ops.hpp): autograd functions over the kernels of
// kernels/cuda/rope_split.hpp, add_layer_norm.hpp, swiglu.hpp and bias_gelu.hpp, on the current
// stream;
// nothing here waits for the GPU.
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/torch.h>

#include <array>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/add_layer_norm.hpp"
#include "kernels/cuda/bias_gelu.hpp"
#include "kernels/cuda/column_sums.hpp"
#include "kernels/cuda/head_layout.hpp"
#include "kernels/cuda/rope_split.hpp"
#include "kernels/cuda/swiglu.hpp"
#include "ops/block_ops.hpp"

namespace reach::ops {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
namespace gpu = kernels::gpu;

void* stream() { return at::cuda::getCurrentCUDAStream().stream(); }

gpu::ScalarType kernel_type(torch::ScalarType type, const char* op, const char* name) {
  if (type == torch::kFloat32) return gpu::ScalarType::kFloat32;
  if (type == torch::kBFloat16) return gpu::ScalarType::kBFloat16;
  throw std::invalid_argument(std::string(op) + ": " + name + " must be float32 or bfloat16, got " +
                              std::string(c10::toString(type)));
}
gpu::ScalarType kernel_type(const Tensor& t, const char* op, const char* name) {
  return kernel_type(t.scalar_type(), op, name);
}

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

struct RopeSplit : torch::autograd::Function<RopeSplit> {
  static variable_list forward(AutogradContext* ctx, const Tensor& qkv_in, int64_t heads,
                               const Tensor& cos, const Tensor& sin, bool token_major) {
    const c10::cuda::CUDAGuard guard(qkv_in.device());
    const auto qkv = qkv_in.contiguous();
    const int64_t b = qkv.size(0), t = qkv.size(1), hd = qkv.size(2) / (3 * heads);
    const kernels::cpu::RopeSplitShape shape{b, t, heads, hd, token_major};
    const auto sizes =
        token_major ? std::vector<int64_t>{b, t, heads, hd} : std::vector<int64_t>{b, heads, t, hd};
    auto q = torch::empty(sizes, qkv.options());
    auto k = torch::empty_like(q), v = torch::empty_like(q);
    gpu::rope_split_forward_cuda(shape, kernel_type(qkv, "rope_split", "qkv"), qkv.data_ptr(),
                                 cos.data_ptr<float>(), sin.data_ptr<float>(), q.data_ptr(),
                                 k.data_ptr(), v.data_ptr(), stream());
    ctx->save_for_backward({cos, sin});
    ctx->saved_data["b"] = b;
    ctx->saved_data["t"] = t;
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["hd"] = hd;
    ctx->saved_data["token_major"] = token_major;
    return {q, k, v};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const kernels::cpu::RopeSplitShape shape{
        ctx->saved_data["b"].toInt(), ctx->saved_data["t"].toInt(),
        ctx->saved_data["heads"].toInt(), ctx->saved_data["hd"].toInt(),
        ctx->saved_data["token_major"].toBool()};  // the gradients are laid out as the outputs
    // An output nobody used has no gradient: zeros of the right shape stand in.
    Tensor like;
    for (const auto& g : grads) {
      if (g.defined()) like = g;
    }
    const c10::cuda::CUDAGuard guard(like.device());
    std::array<Tensor, 3> g;
    for (size_t i = 0; i < 3; ++i) {
      g[i] = grads[i].defined() ? grads[i].to(like.scalar_type()).contiguous()
                                : torch::zeros_like(like);
    }
    auto dqkv = torch::empty({shape.batch, shape.seq_len, 3 * shape.heads * shape.head_dim},
                             like.options());
    gpu::rope_split_backward_cuda(shape, kernel_type(like, "rope_split", "gradient"),
                                  g[0].data_ptr(), g[1].data_ptr(), g[2].data_ptr(),
                                  saved[0].data_ptr<float>(), saved[1].data_ptr<float>(),
                                  dqkv.data_ptr(), stream());
    return {dqkv, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

gpu::HeadLayout head_layout(int64_t b, int64_t h, int64_t t, const Tensor& like, int64_t hd) {
  return {b, h, t, hd * static_cast<int64_t>(like.element_size())};
}

struct MergeHeads : torch::autograd::Function<MergeHeads> {
  static variable_list forward(AutogradContext* ctx, const Tensor& y_in) {
    const c10::cuda::CUDAGuard guard(y_in.device());
    const auto y = y_in.contiguous();
    const int64_t b = y.size(0), h = y.size(1), t = y.size(2), hd = y.size(3);
    auto out = torch::empty({b, t, h * hd}, y.options());
    gpu::permute_heads_cuda(head_layout(b, h, t, y, hd), /*heads_to_tokens=*/true, y.data_ptr(),
                            out.data_ptr(), stream());
    ctx->saved_data["b"] = b;
    ctx->saved_data["h"] = h;
    ctx->saved_data["t"] = t;
    ctx->saved_data["hd"] = hd;
    return {out};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const int64_t b = ctx->saved_data["b"].toInt(), h = ctx->saved_data["h"].toInt(),
                  t = ctx->saved_data["t"].toInt(), hd = ctx->saved_data["hd"].toInt();
    const auto g = grads[0].contiguous();
    const c10::cuda::CUDAGuard guard(g.device());
    auto dy = torch::empty({b, h, t, hd}, g.options());
    gpu::permute_heads_cuda(head_layout(b, h, t, g, hd), /*heads_to_tokens=*/false, g.data_ptr(),
                            dy.data_ptr(), stream());
    return {dy};
  }
};

// The column sums of a kernel's [blocks, dim] float32 partial sums (kernels/cuda/column_sums.hpp:
// float64 accumulation in a fixed order; torch's sum(0) took ~11 us a call for these shapes).
Tensor column_sums(const Tensor& partial) {
  auto out = torch::empty({partial.size(1)}, partial.options());
  gpu::column_sums_cuda(partial.size(0), partial.size(1), partial.data_ptr<float>(),
                        out.data_ptr<float>(), stream());
  return out;
}

torch::ScalarType output_type(const Tensor& x) {
  return at::autocast::is_autocast_enabled(at::kCUDA) ? at::autocast::get_autocast_dtype(at::kCUDA)
                                                      : x.scalar_type();
}

// The shared forward and backward of the four norm functions below; r undefined: no residual
// add (LibTorch's Function::apply takes no undefined tensor inputs, hence a function each with
// and without r); RMSNorm (kind) has no beta (undefined) and no mean.
variable_list add_norm_forward(AutogradContext* ctx, gpu::NormKind kind, const Tensor& x_in,
                               const Tensor& r_in, const Tensor& gamma, const Tensor& beta,
                               double eps, int64_t y_type) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto x = x_in.contiguous();
  const bool has_r = r_in.defined(), rms = kind == gpu::NormKind::kRmsNorm;
  const auto r = has_r ? r_in.contiguous() : Tensor();
  const int64_t dim = x.size(-1), rows = x.numel() / dim;
  const auto out_type = static_cast<torch::ScalarType>(y_type);
  gpu::AddLayerNormArgs args{
      rows,
      dim,
      eps,
      has_r ? kernel_type(r, "add_layer_norm", "r") : gpu::ScalarType::kFloat32,
      kernel_type(out_type, "add_layer_norm", "the output"),
      kind};
  auto h = has_r ? torch::empty_like(x) : x;
  auto y = torch::empty(x.sizes(), x.options().dtype(out_type));
  auto rstd = torch::empty({rows}, x.options());
  const auto mean = rms ? Tensor() : torch::empty({rows}, x.options());
  gpu::add_layer_norm_forward_cuda(
      args, x.data_ptr<float>(), has_r ? r.data_ptr() : nullptr, gamma.data_ptr<float>(),
      rms ? nullptr : beta.data_ptr<float>(), has_r ? h.data_ptr<float>() : nullptr, y.data_ptr(),
      rms ? nullptr : mean.data_ptr<float>(), rstd.data_ptr<float>(), stream());
  if (rms) {
    ctx->save_for_backward({h, rstd, gamma});
  } else {
    ctx->save_for_backward({h, rstd, gamma, mean});
  }
  ctx->saved_data["eps"] = eps;
  ctx->saved_data["rms"] = rms;
  ctx->saved_data["r_type"] = static_cast<int64_t>(has_r ? r.scalar_type() : torch::kFloat32);
  if (has_r) return {h, y};
  return {y};
}

// -> {dx, dr (undefined without r), dgamma, dbeta (undefined for RMSNorm)}; dh: the gradient
// flowing into h (or none).
std::array<Tensor, 4> add_norm_backward(AutogradContext* ctx, bool has_r, const Tensor& dh_in,
                                        Tensor dy) {
  const auto saved = ctx->get_saved_variables();
  const bool rms = ctx->saved_data["rms"].toBool();
  const auto &h = saved[0], &rstd = saved[1], &gamma = saved[2];
  const Tensor mean = rms ? Tensor() : saved[3];
  const auto r_type = static_cast<torch::ScalarType>(ctx->saved_data["r_type"].toInt());
  const Tensor dh = dh_in.defined() ? dh_in.to(torch::kFloat32).contiguous() : Tensor();
  const c10::cuda::CUDAGuard guard(h.device());
  const int64_t dim = h.size(-1), rows = h.numel() / dim;
  if (!dy.defined()) dy = torch::zeros(h.sizes(), h.options());
  dy = dy.contiguous();
  gpu::AddLayerNormArgs args{
      rows,
      dim,
      ctx->saved_data["eps"].toDouble(),
      has_r ? kernel_type(r_type, "add_layer_norm", "r") : gpu::ScalarType::kFloat32,
      kernel_type(dy, "add_layer_norm", "the output gradient"),
      rms ? gpu::NormKind::kRmsNorm : gpu::NormKind::kLayerNorm};
  const int64_t blocks = gpu::add_layer_norm_backward_blocks(args);
  auto dx = torch::empty_like(h);
  auto dr = has_r && r_type != torch::kFloat32 ? torch::empty(h.sizes(), h.options().dtype(r_type))
                                               : Tensor();
  auto dgamma = torch::empty({blocks, dim}, h.options());
  const auto dbeta = rms ? Tensor() : torch::empty({blocks, dim}, h.options());
  gpu::add_layer_norm_backward_cuda(
      args, dy.data_ptr(), dh.defined() ? dh.data_ptr<float>() : nullptr, h.data_ptr<float>(),
      rms ? nullptr : mean.data_ptr<float>(), rstd.data_ptr<float>(), gamma.data_ptr<float>(),
      dx.data_ptr<float>(), dr.defined() ? dr.data_ptr() : nullptr, dgamma.data_ptr<float>(),
      rms ? nullptr : dbeta.data_ptr<float>(), stream());
  Tensor grad_r;
  // (A copy when r is float32: one tensor handed back for two inputs could be accumulated
  // into in place for one of them.)
  if (has_r) grad_r = dr.defined() ? dr : dx.clone();
  return {dx, grad_r, column_sums(dgamma), rms ? Tensor() : column_sums(dbeta)};
}

// h = x + r, y = layer_norm(h): outputs {h, y}.
struct AddLayerNorm : torch::autograd::Function<AddLayerNorm> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& r,
                               const Tensor& gamma, const Tensor& beta, double eps,
                               int64_t y_type) {
    return add_norm_forward(ctx, gpu::NormKind::kLayerNorm, x, r, gamma, beta, eps, y_type);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto g = add_norm_backward(ctx, true, grads[0], grads[1]);
    return {g[0], g[1], g[2], g[3], Tensor(), Tensor()};
  }
};

// y = layer_norm(x): output {y}.
struct LayerNormOnly : torch::autograd::Function<LayerNormOnly> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& gamma,
                               const Tensor& beta, double eps, int64_t y_type) {
    return add_norm_forward(ctx, gpu::NormKind::kLayerNorm, x, Tensor(), gamma, beta, eps, y_type);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto g = add_norm_backward(ctx, false, Tensor(), grads[0]);
    return {g[0], g[2], g[3], Tensor(), Tensor()};
  }
};

// h = x + r, y = rms_norm(h): outputs {h, y}.
struct AddRmsNorm : torch::autograd::Function<AddRmsNorm> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& r,
                               const Tensor& weight, double eps, int64_t y_type) {
    return add_norm_forward(ctx, gpu::NormKind::kRmsNorm, x, r, weight, Tensor(), eps, y_type);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto g = add_norm_backward(ctx, true, grads[0], grads[1]);
    return {g[0], g[1], g[2], Tensor(), Tensor()};
  }
};

// y = rms_norm(x): output {y}.
struct RmsNormOnly : torch::autograd::Function<RmsNormOnly> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                               double eps, int64_t y_type) {
    return add_norm_forward(ctx, gpu::NormKind::kRmsNorm, x, Tensor(), weight, Tensor(), eps,
                            y_type);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto g = add_norm_backward(ctx, false, Tensor(), grads[0]);
    return {g[0], g[2], Tensor(), Tensor()};
  }
};

// The checks both fused norms make (beta: LayerNorm's, undefined for RMSNorm).
void require_norm_inputs(const char* op, const Tensor& x, const Tensor& r, const Tensor& gamma,
                         const Tensor& beta) {
  const std::string name(op);
  require(x.is_cuda() && x.scalar_type() == torch::kFloat32 && x.dim() >= 1,
          name + ": x must be a float32 CUDA tensor");
  const int64_t dim = x.size(-1);
  require(dim >= 1 && dim <= gpu::kMaxLayerNormDim, name + ": the last dimension must be 1.." +
                                                        std::to_string(gpu::kMaxLayerNormDim) +
                                                        ", got " + std::to_string(dim));
  require(!r.defined() || (r.sizes() == x.sizes() && r.device() == x.device()),
          name + ": r must have x's shape and device");
  const auto parameter_ok = [&](const Tensor& p) {
    return p.scalar_type() == torch::kFloat32 && p.numel() == dim && p.is_contiguous() &&
           p.device() == x.device();
  };
  require(parameter_ok(gamma) && (!beta.defined() || parameter_ok(beta)),
          name + (beta.defined() ? ": gamma and beta" : ": weight") +
              " must be contiguous float32 [D] on x's device");
  if (r.defined()) kernel_type(r, op, "r");
}

// y = silu(a) * b: output {y}.
struct SwiGlu : torch::autograd::Function<SwiGlu> {
  static variable_list forward(AutogradContext* ctx, const Tensor& a_in, const Tensor& b_in) {
    const c10::cuda::CUDAGuard guard(a_in.device());
    const auto a = a_in.contiguous(), b = b_in.contiguous();
    auto y = torch::empty_like(a);
    gpu::swiglu_forward_cuda(a.numel(), kernel_type(a, "swiglu", "a"), a.data_ptr(), b.data_ptr(),
                             y.data_ptr(), stream());
    ctx->save_for_backward({a, b});
    return {y};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &a = saved[0], &b = saved[1];
    const c10::cuda::CUDAGuard guard(a.device());
    const auto dy = grads[0].to(a.scalar_type()).contiguous();
    auto da = torch::empty_like(a), db = torch::empty_like(b);
    gpu::swiglu_backward_cuda(a.numel(), kernel_type(a, "swiglu", "a"), dy.data_ptr(), a.data_ptr(),
                              b.data_ptr(), da.data_ptr(), db.data_ptr(), stream());
    return {da, db};
  }
};

// y = gelu(h0 + bias): output {y}; the backward's bias gradient is the sum of the kernel's
// per-block partial column sums.
struct BiasGelu : torch::autograd::Function<BiasGelu> {
  static variable_list forward(AutogradContext* ctx, const Tensor& h0_in, const Tensor& bias_in) {
    const c10::cuda::CUDAGuard guard(h0_in.device());
    const auto h0 = h0_in.contiguous(), bias = bias_in.contiguous();
    auto y = torch::empty_like(h0);
    gpu::bias_gelu_forward_cuda(h0.size(0), h0.size(1), kernel_type(h0, "bias_gelu", "h0"),
                                h0.data_ptr(), bias.data_ptr<float>(), y.data_ptr(), stream());
    ctx->save_for_backward({h0, bias});
    return {y};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &h0 = saved[0], &bias = saved[1];
    const c10::cuda::CUDAGuard guard(h0.device());
    const auto dy = grads[0].to(h0.scalar_type()).contiguous();
    const int64_t rows = h0.size(0), cols = h0.size(1);
    const auto type = kernel_type(h0, "bias_gelu", "h0");
    auto dh = torch::empty_like(h0);
    auto partial = torch::empty({gpu::bias_gelu_backward_partial_rows(rows, cols, type), cols},
                                bias.options());
    gpu::bias_gelu_backward_cuda(rows, cols, type, dy.data_ptr(), h0.data_ptr(),
                                 bias.data_ptr<float>(), dh.data_ptr(), partial.data_ptr<float>(),
                                 stream());
    return {dh, column_sums(partial)};
  }
};

// y = x W^T + b in bf16 (as bf16 autocast computes it: addmm on the bf16 casts, the bias in the
// matrix product's epilogue); the backward as AddmmBackward0 computes it (dx = dy W, dW = (x^T
// dy)^T cast to W's float32), except the bias gradient: the column sums of dy by
// kernels/cuda/column_sums.hpp (float32 partials of 256 rows, then float64) instead of torch's
// sum(0) over the bf16 gradient, rounded once to float32 instead of to bf16 and then float32.
struct LinearBias : torch::autograd::Function<LinearBias> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                               const Tensor& bias) {
    const c10::cuda::CUDAGuard guard(x.device());
    const auto xb = x.to(torch::kBFloat16).contiguous();
    const auto wb = weight.to(torch::kBFloat16);
    auto y = at::addmm(bias.to(torch::kBFloat16), xb, wb.t());
    ctx->save_for_backward({xb, wb});
    ctx->saved_data["x_type"] = static_cast<int64_t>(x.scalar_type());
    ctx->saved_data["w_type"] = static_cast<int64_t>(weight.scalar_type());
    ctx->saved_data["b_type"] = static_cast<int64_t>(bias.scalar_type());
    return {y};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &xb = saved[0], &wb = saved[1];
    const c10::cuda::CUDAGuard guard(xb.device());
    const auto dy = grads[0].to(torch::kBFloat16).contiguous();
    const auto type = [&](const char* key) {
      return static_cast<torch::ScalarType>(ctx->saved_data[key].toInt());
    };
    const auto dx = dy.mm(wb).to(type("x_type"));
    const auto dw = xb.t().mm(dy).t().to(type("w_type"));
    const int64_t rows = dy.size(0), cols = dy.size(1);
    auto workspace = torch::empty({gpu::column_sums_bf16_workspace_rows(rows), cols},
                                  dy.options().dtype(torch::kFloat32));
    auto db = torch::empty({cols}, workspace.options());
    gpu::column_sums_bf16_cuda(rows, cols, dy.data_ptr(), workspace.data_ptr<float>(),
                               db.data_ptr<float>(), stream());
    return {dx, dw, db.to(type("b_type"))};
  }
};
}  // namespace

std::array<Tensor, 3> rope_split(const Tensor& qkv, int64_t heads, const Tensor& cos,
                                 const Tensor& sin, bool token_major) {
  require(qkv.is_cuda() && cos.is_cuda() && sin.is_cuda(),
          "rope_split: qkv, cos and sin must be CUDA tensors");
  require(qkv.dim() == 3 && heads >= 1 && qkv.size(2) % (6 * heads) == 0,
          "rope_split: qkv must be [B, T, 3 * heads * head_dim] with an even head_dim, got " +
              c10::str(qkv.sizes()) + " for " + std::to_string(heads) + " heads");
  const int64_t hd = qkv.size(2) / (3 * heads);
  require(cos.scalar_type() == torch::kFloat32 && sin.scalar_type() == torch::kFloat32 &&
              cos.is_contiguous() && sin.is_contiguous() && cos.dim() == 2 &&
              cos.sizes() == sin.sizes() && cos.size(0) == qkv.size(1) && cos.size(1) == hd / 2,
          "rope_split: cos and sin must be contiguous float32 [T, head_dim / 2] = [" +
              std::to_string(qkv.size(1)) + ", " + std::to_string(hd / 2) + "], got " +
              c10::str(cos.sizes()));
  kernel_type(qkv, "rope_split", "qkv");
  const auto out = RopeSplit::apply(qkv, heads, cos, sin, token_major);
  // Token-major outputs are [B, T, H, hd]: the [B, H, T, hd] views (autograd transposes
  // their gradients back, which the kernel then reads as laid out).
  if (token_major) return {out[0].transpose(1, 2), out[1].transpose(1, 2), out[2].transpose(1, 2)};
  return {out[0], out[1], out[2]};
}

Tensor merge_heads(const Tensor& y) {
  require(y.is_cuda() && y.dim() == 4, "merge_heads: y must be a [B, H, T, hd] CUDA tensor");
  require(y.size(3) * static_cast<int64_t>(y.element_size()) % 16 == 0,
          "merge_heads: head_dim x element size must be a multiple of 16 bytes, got " +
              std::to_string(y.size(3)) + " x " + std::to_string(y.element_size()));
  return MergeHeads::apply(y)[0];
}

std::pair<Tensor, Tensor> add_layer_norm(const Tensor& x, const Tensor& r, const Tensor& gamma,
                                         const Tensor& beta, double eps) {
  require(beta.defined(), "add_layer_norm: beta must be given");
  require_norm_inputs("add_layer_norm", x, r, gamma, beta);
  const auto y_type = static_cast<int64_t>(output_type(x));
  if (!r.defined()) return {x, LayerNormOnly::apply(x, gamma, beta, eps, y_type)[0]};
  const auto out = AddLayerNorm::apply(x, r, gamma, beta, eps, y_type);
  return {out[0], out[1]};
}

std::pair<Tensor, Tensor> add_rms_norm(const Tensor& x, const Tensor& r, const Tensor& weight,
                                       double eps) {
  require_norm_inputs("add_rms_norm", x, r, weight, Tensor());
  const auto y_type = static_cast<int64_t>(output_type(x));
  if (!r.defined()) return {x, RmsNormOnly::apply(x, weight, eps, y_type)[0]};
  const auto out = AddRmsNorm::apply(x, r, weight, eps, y_type);
  return {out[0], out[1]};
}

Tensor swiglu(const Tensor& a, const Tensor& b) {
  require(a.is_cuda() && b.is_cuda() && a.device() == b.device(),
          "swiglu: a and b must be CUDA tensors on one device");
  require(a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type(),
          "swiglu: a and b must have one shape and type, got " + c10::str(a.sizes()) + " " +
              std::string(c10::toString(a.scalar_type())) + " and " + c10::str(b.sizes()) + " " +
              std::string(c10::toString(b.scalar_type())));
  kernel_type(a, "swiglu", "a");
  return SwiGlu::apply(a, b)[0];
}

Tensor bias_gelu(const Tensor& h0, const Tensor& bias) {
  require(h0.is_cuda() && bias.is_cuda() && h0.device() == bias.device(),
          "bias_gelu: h0 and bias must be CUDA tensors on one device");
  require(
      h0.dim() == 2 && h0.size(0) >= 1 && h0.size(1) >= 1 && h0.size(1) <= gpu::kMaxBiasGeluCols,
      "bias_gelu: h0 must be [rows, cols] with rows >= 1 and 1 <= cols <= " +
          std::to_string(gpu::kMaxBiasGeluCols) + ", got " + c10::str(h0.sizes()));
  require(bias.scalar_type() == torch::kFloat32 && bias.dim() == 1 && bias.size(0) == h0.size(1),
          "bias_gelu: bias must be float32 [" + std::to_string(h0.size(1)) + "], got " +
              c10::str(bias.sizes()) + " " + std::string(c10::toString(bias.scalar_type())));
  kernel_type(h0, "bias_gelu", "h0");
  return BiasGelu::apply(h0, bias)[0];
}

bool linear_bias_supports(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  return fused_block_kernels_enabled() && x.is_cuda() && x.dim() == 2 && x.size(0) > 0 &&
         bias.defined() && weight.device() == x.device() && bias.device() == x.device() &&
         output_type(x) == torch::kBFloat16 && at::autocast::is_autocast_enabled(at::kCUDA);
}

Tensor linear_bias(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  require(x.is_cuda() && weight.device() == x.device() && bias.device() == x.device(),
          "linear_bias: x, weight and bias must be CUDA tensors on one device");
  require(x.dim() == 2 && weight.dim() == 2 && bias.dim() == 1 && x.size(1) == weight.size(1) &&
              bias.size(0) == weight.size(0) && x.size(0) >= 1 && weight.size(0) >= 1,
          "linear_bias: x [rows, in], weight [out, in] and bias [out] with rows, out >= 1, got " +
              c10::str(x.sizes()) + ", " + c10::str(weight.sizes()) + ", " +
              c10::str(bias.sizes()));
  return LinearBias::apply(x, weight, bias)[0];
}

}  // namespace reach::ops
