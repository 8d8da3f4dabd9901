#include "ops/dilated_attention.hpp"

#include <torch/library.h>

#include <cmath>

#include "kernels/cpu/dilated_attention.hpp"

namespace reach::ops {

using torch::Tensor;

namespace {

void check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, int64_t window,
                  const Tensor& offsets) {
  TORCH_CHECK(q.defined() && k.defined() && v.defined(),
              "dilated_attention: q, k and v must be defined tensors");
  TORCH_CHECK(q.dim() == 4,
              "dilated_attention: q must have rank 4 [batch, heads, n, head_dim], "
              "got rank ",
              q.dim());
  // Grouped-query attention: k and v may have fewer heads than q, a divisor of q's.
  TORCH_CHECK(k.dim() == 4 && k.sizes() == v.sizes() && k.size(0) == q.size(0) &&
                  k.size(2) == q.size(2) && k.size(3) == q.size(3) && k.size(1) >= 1 &&
                  q.size(1) % k.size(1) == 0,
              "dilated_attention: k and v must be [batch, kv_heads, n, head_dim] with q's batch, "
              "n and head_dim and kv_heads dividing q's heads, got q ",
              q.sizes(), ", k ", k.sizes(), ", v ", v.sizes());
  TORCH_CHECK(q.scalar_type() == torch::kFloat32 || q.scalar_type() == torch::kFloat64 ||
                  (q.scalar_type() == torch::kBFloat16 && q.is_cuda()),
              "dilated_attention: dtype must be float32 or float64 (or bfloat16 on CUDA), got ",
              q.scalar_type());
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "dilated_attention: q, k and v must share one dtype");
  TORCH_CHECK(k.device() == q.device() && v.device() == q.device(),
              "dilated_attention: q, k and v must be on one device");
  TORCH_CHECK(q.numel() > 0, "dilated_attention: empty input (shape ", q.sizes(), ")");
  TORCH_CHECK(window >= 1, "dilated_attention: window W must be >= 1, got ", window);
  TORCH_CHECK(offsets.defined() && offsets.dim() == 1,
              "dilated_attention: offsets must be a 1-D tensor");
  TORCH_CHECK(offsets.is_floating_point(), "dilated_attention: offsets must be floating point");
}

kernels::DilatedAttentionParams make_params(const Tensor& q, const Tensor& k, int64_t window,
                                            const Tensor& offsets_cpu, double scale) {
  kernels::DilatedAttentionParams p;
  p.batch_heads = q.size(0) * q.size(1);
  p.kv_group = q.size(1) / k.size(1);
  p.seq_len = q.size(2);
  p.head_dim = q.size(3);
  p.window = window;
  p.offsets = offsets_cpu.data_ptr<double>();
  p.num_offsets = offsets_cpu.numel();
  p.scale = scale;
  const std::string problem = kernels::validate_params(p);
  TORCH_CHECK(problem.empty(), "dilated_attention: ", problem);
  return p;
}

Tensor offsets_on_host(const Tensor& offsets) {
  return offsets.detach().to(torch::kCPU, torch::kFloat64).contiguous();
}

double resolve_scale(c10::optional<double> scale, int64_t head_dim) {
  const double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(head_dim)));
  TORCH_CHECK(std::isfinite(s) && s > 0, "dilated_attention: scale must be positive, got ", s);
  return s;
}

}  // namespace

Tensor token_major_copy(const Tensor& t) { return t.transpose(1, 2).contiguous().transpose(1, 2); }

bool is_token_major(const Tensor& t) { return t.dim() == 4 && t.transpose(1, 2).is_contiguous(); }

std::tuple<Tensor, Tensor> forward_cpu(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                       int64_t window, const Tensor& offsets,
                                       c10::optional<double> scale, bool token_major_out) {
  check_inputs(q_in, k_in, v_in, window, offsets);
  TORCH_CHECK(q_in.device().is_cpu(), "dilated_attention: the CPU kernel got a ", q_in.device(),
              " tensor");
  const Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const Tensor off = offsets_on_host(offsets);
  const auto p = make_params(q, k, window, off, resolve_scale(scale, q.size(3)));
  Tensor out = torch::empty_like(q);
  Tensor lse = torch::empty({q.size(0), q.size(1), q.size(2)}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "dilated_attention_forward", [&] {
    kernels::dilated_attention_forward_cpu<scalar_t>(
        p, q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
        out.data_ptr<scalar_t>(), lse.data_ptr<scalar_t>());
  });
  // The CPU kernel writes [B, H, n, d]; the token-major layout asked for is one copy away.
  return {token_major_out && q.size(1) > 1 ? token_major_copy(out) : out, lse};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> backward_cpu(
    const Tensor& grad_out_in, const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
    const Tensor& out, const Tensor& lse_in, int64_t window, const Tensor& offsets,
    c10::optional<double> scale, bool need_offsets_grad) {
  check_inputs(q_in, k_in, v_in, window, offsets);
  TORCH_CHECK(grad_out_in.sizes() == q_in.sizes(), "dilated_attention backward: grad_out shape ",
              grad_out_in.sizes(), " does not match q ", q_in.sizes());
  const Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const Tensor grad_out = grad_out_in.to(q.scalar_type()).contiguous();
  const Tensor lse = lse_in.contiguous();
  const Tensor off = offsets_on_host(offsets);
  const auto p = make_params(q, k, window, off, resolve_scale(scale, q.size(3)));
  Tensor dq = torch::empty_like(q), dk = torch::empty_like(k), dv = torch::empty_like(v);
  Tensor doff = torch::zeros({off.numel()}, off.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "dilated_attention_backward", [&] {
    kernels::dilated_attention_backward_cpu<scalar_t>(
        p, q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
        out.data_ptr<scalar_t>(), lse.data_ptr<scalar_t>(), grad_out.data_ptr<scalar_t>(),
        dq.data_ptr<scalar_t>(), dk.data_ptr<scalar_t>(), dv.data_ptr<scalar_t>(),
        need_offsets_grad ? doff.data_ptr<double>() : nullptr);
  });
  return {dq, dk, dv, doff};
}

namespace {

using ForwardSignature = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                    int64_t, const Tensor&, c10::optional<double>,
                                                    bool);
using BackwardSignature = std::tuple<Tensor, Tensor, Tensor, Tensor>(const Tensor&, const Tensor&,
                                                                     const Tensor&, const Tensor&,
                                                                     const Tensor&, const Tensor&,
                                                                     int64_t, const Tensor&,
                                                                     c10::optional<double>, bool);

// The registered forward and backward ops, called through the dispatcher so that the kernel
// of the tensors' device runs.
const c10::TypedOperatorHandle<ForwardSignature>& forward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("reach::dilated_attention_forward", "")
                             .typed<ForwardSignature>();
  return op;
}

const c10::TypedOperatorHandle<BackwardSignature>& backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("reach::dilated_attention_backward", "")
                             .typed<BackwardSignature>();
  return op;
}

class DilatedAttentionFunction : public torch::autograd::Function<DilatedAttentionFunction> {
 public:
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& q, const Tensor& k,
                        const Tensor& v, int64_t window, const Tensor& offsets,
                        c10::optional<double> scale, bool token_major_out) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const auto& op = forward_op();
    auto [out, lse] = op.call(q, k, v, window, offsets, scale, token_major_out);
    ctx->save_for_backward({q, k, v, out, lse, offsets});
    ctx->saved_data["window"] = window;
    ctx->saved_data["scale"] = resolve_scale(scale, q.size(3));
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& offsets = saved[5];
    // Edges exist for tensor inputs only: q, k, v, offsets -> offsets is edge 3.
    const bool need_offsets = ctx->needs_input_grad(3);
    const auto& op = backward_op();
    auto [dq, dk, dv, doff] = op.call(grads[0], saved[0], saved[1], saved[2], saved[3], saved[4],
                                      ctx->saved_data["window"].toInt(), offsets,
                                      ctx->saved_data["scale"].toDouble(), need_offsets);
    // The op returns d offsets on q's device; the gradient goes where the offsets live.
    return {dq,
            dk,
            dv,
            Tensor(),
            need_offsets ? doff.to(offsets.device(), offsets.scalar_type()) : Tensor(),
            Tensor(),
            Tensor()};
  }
};

// The learned schedule: offsets = alpha * b. The offsets go to the op as a host tensor built
// from alpha's value, and d alpha = sum_k b_k d loss / d offset_k is formed on the device, so
// a model on the GPU reads nothing back per layer (the op takes its offsets by value, and a
// device -> host read would stall the queue of GPU work at every layer).
class LearnedDilatedAttentionFunction
    : public torch::autograd::Function<LearnedDilatedAttentionFunction> {
 public:
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& alpha, int64_t window, const Tensor& bases,
                        double alpha_value) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const Tensor offsets = bases * alpha_value;  // on the host
    const auto& op = forward_op();
    auto [out, lse] = op.call(q, k, v, window, offsets, c10::nullopt, false);
    ctx->save_for_backward({q, k, v, out, lse});
    ctx->saved_data["window"] = window;
    ctx->saved_data["offsets"] = offsets;
    ctx->saved_data["bases"] = bases;
    ctx->saved_data["alpha_device"] = alpha.device();
    ctx->saved_data["alpha_dtype"] = alpha.scalar_type();
    ctx->saved_data["alpha_sizes"] = alpha.sizes().vec();
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const bool need_alpha = ctx->needs_input_grad(3);
    const auto& op = backward_op();
    const Tensor offsets = ctx->saved_data["offsets"].toTensor();
    auto [dq, dk, dv, doff] =
        op.call(grads[0], saved[0], saved[1], saved[2], saved[3], saved[4],
                ctx->saved_data["window"].toInt(), offsets, c10::nullopt, need_alpha);
    Tensor dalpha;
    if (need_alpha) {
      Tensor bases = ctx->saved_data["bases"].toTensor();
      // Host -> device without waiting for the GPU: from pinned memory, asynchronously.
      bases = doff.is_cuda() ? bases.pin_memory().to(doff.device(), /*non_blocking=*/true)
                             : bases.to(doff.device());
      dalpha = (doff * bases)
                   .sum()
                   .to(ctx->saved_data["alpha_device"].toDevice(),
                       ctx->saved_data["alpha_dtype"].toScalarType())
                   .reshape(ctx->saved_data["alpha_sizes"].toIntVector());
    }
    return {dq, dk, dv, dalpha, Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

Tensor dilated_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t window,
                         const Tensor& offsets, c10::optional<double> scale, bool token_major_out) {
  check_inputs(q, k, v, window, offsets);  // before dispatch, which would pick one device
  return DilatedAttentionFunction::apply(q, k, v, window, offsets, scale, token_major_out);
}

Tensor dilated_attention_static(const Tensor& q, const Tensor& k, const Tensor& v,
                                const pattern::DilationSpec& spec) {
  const auto ints = pattern::integer_offsets(spec);
  std::vector<double> real(ints.begin(), ints.end());
  const Tensor offsets = torch::tensor(real, torch::kFloat64);
  return dilated_attention(q, k, v, spec.window, offsets);
}

Tensor dilated_attention_learned(const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& alpha, pattern::OffsetBase base, int64_t window,
                                 int64_t reach, c10::optional<double> alpha_value) {
  TORCH_CHECK(alpha.defined() && alpha.numel() == 1,
              "dilated_attention_learned: alpha must be a single-element tensor");
  TORCH_CHECK(alpha.is_floating_point(), "dilated_attention_learned: alpha must be floating point");
  const double value = alpha_value ? *alpha_value : alpha.item<double>();
  TORCH_CHECK(std::isfinite(value) && value > 0,
              "dilated_attention_learned: alpha must be a positive finite number, got ", value);
  const auto fo = pattern::fractional_offsets({base, value, window, reach});
  const Tensor bases = torch::tensor(
      std::vector<double>(fo.base_values.begin(), fo.base_values.end()), torch::kFloat64);
  check_inputs(q, k, v, window, bases * value);  // before dispatch, which picks one device
  return LearnedDilatedAttentionFunction::apply(q, k, v, alpha, window, bases, value);
}

Tensor dense_causal_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                              c10::optional<double> scale) {
  TORCH_CHECK(q.dim() == 4, "dense_causal_attention: q must have rank 4");
  const int64_t n = q.size(2);
  const double s = resolve_scale(scale, q.size(3));
  Tensor scores = torch::matmul(q, k.transpose(-2, -1)).mul_(s);
  const Tensor future = torch::ones({n, n}, torch::TensorOptions().dtype(torch::kBool)).triu_(1);
  scores.masked_fill_(future, -std::numeric_limits<double>::infinity());
  return torch::matmul(torch::softmax(scores, -1), v);
}

}  // namespace reach::ops

namespace {

at::Tensor dilated_attention_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                int64_t window, const at::Tensor& offsets,
                                c10::optional<double> scale) {
  return reach::ops::dilated_attention(q, k, v, window, offsets, scale);
}

std::tuple<at::Tensor, at::Tensor> forward_op(const at::Tensor& q, const at::Tensor& k,
                                              const at::Tensor& v, int64_t window,
                                              const at::Tensor& offsets,
                                              c10::optional<double> scale, bool token_major_out) {
  return reach::ops::forward_cpu(q, k, v, window, offsets, scale, token_major_out);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_op(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, int64_t window, const at::Tensor& offsets,
    c10::optional<double> scale, bool need_offsets_grad) {
  return reach::ops::backward_cpu(grad_out, q, k, v, out, lse, window, offsets, scale,
                                  need_offsets_grad);
}

}  // namespace

TORCH_LIBRARY(reach, m) {
  m.def(
      "dilated_attention(Tensor q, Tensor k, Tensor v, int window, Tensor offsets, "
      "float? scale=None) -> Tensor");
  m.def(
      "dilated_attention_forward(Tensor q, Tensor k, Tensor v, int window, Tensor offsets, "
      "float? scale=None, bool token_major_out=False) -> (Tensor, Tensor)");
  m.def(
      "dilated_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, "
      "Tensor lse, int window, Tensor offsets, float? scale=None, bool offsets_grad=True) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(reach, CompositeImplicitAutograd, m) {
  m.impl("dilated_attention", &dilated_attention_op);
}

TORCH_LIBRARY_IMPL(reach, CPU, m) {
  m.impl("dilated_attention_forward", &forward_op);
  m.impl("dilated_attention_backward", &backward_op);
}
