#include "ops/entmax_attention.hpp"

#include <torch/library.h>

#include <array>
#include <cmath>

#include "kernels/cpu/entmax_attention.hpp"
#ifdef REACH_ENTMAX_ATTENTION_CUDA
#include "ops/entmax_attention_cuda.hpp"
#endif

namespace reach::ops {

using torch::Tensor;

namespace {

constexpr const char* kName = "entmax_attention";
#ifdef REACH_ENTMAX_ATTENTION_CUDA
constexpr bool kCuda = true;  // ops/entmax_attention_cuda.cpp: the CUDA kernels
#else
constexpr bool kCuda = false;
#endif

void check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& offsets) {
  TORCH_CHECK(q.defined() && k.defined() && v.defined(), kName,
              ": q, k and v must be defined tensors");
  TORCH_CHECK(q.dim() == 4, kName, ": q must have rank 4 [batch, heads, n, head_dim], got rank ",
              q.dim());
  TORCH_CHECK(k.sizes() == q.sizes() && v.sizes() == q.sizes(), kName,
              ": q, k and v must have the same shape, got q ", q.sizes(), ", k ", k.sizes(), ", v ",
              v.sizes());
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), kName,
              ": q, k and v must share one dtype");
  TORCH_CHECK(k.device() == q.device() && v.device() == q.device(), kName,
              ": q, k and v must be on one device");
  TORCH_CHECK(q.device().is_cpu() || (kCuda && q.device().is_cuda()), kName, ": no kernel for ",
              q.device().type(), " tensors (kernels: CPU", kCuda ? ", CUDA" : "", ")");
  if (q.device().is_cpu()) {
    TORCH_CHECK(q.scalar_type() == torch::kFloat32 || q.scalar_type() == torch::kFloat64, kName,
                ": dtype must be float32 or float64 on the CPU, got ", q.scalar_type());
  } else {
    TORCH_CHECK(q.scalar_type() == torch::kFloat32 || q.scalar_type() == torch::kBFloat16, kName,
                ": dtype must be float32 or bfloat16 on CUDA, got ", q.scalar_type());
  }
  TORCH_CHECK(q.numel() > 0, kName, ": empty input (shape ", q.sizes(), ")");
  TORCH_CHECK(offsets.defined() && offsets.dim() == 1, kName, ": offsets must be a 1-D tensor");
}

// Host float64 copy of a head parameter, shape checked against [heads] (or, when
// per_query_ok, [batch, heads, n]). Undefined for a CUDA tensor: its values are not read back
// (that would make the host wait for the GPU in every call); ops/entmax_attention_cuda.cpp
// checks them on the device.
Tensor host_param(const Tensor& t, const Tensor& q, const char* what, bool per_query_ok) {
  TORCH_CHECK(t.defined(), kName, ": ", what, " is undefined");
  const bool per_head = t.dim() == 1 && t.size(0) == q.size(1);
  const bool per_query = per_query_ok && t.dim() == 3 && t.size(0) == q.size(0) &&
                         t.size(1) == q.size(1) && t.size(2) == q.size(2);
  TORCH_CHECK(per_head || per_query, kName, ": ", what, " must have shape [heads] = [", q.size(1),
              "]", per_query_ok ? " or [batch, heads, n]" : "", ", got ", t.sizes());
  TORCH_CHECK(t.device().is_cpu() || t.device() == q.device(), kName, ": ", what, " is on ",
              t.device(), ", q on ", q.device(), " (parameters go on the CPU or q's device)");
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), kName, ": ", what,
              " must be a floating-point tensor, got ", t.scalar_type());
  if (t.is_cuda()) return Tensor();
  return t.detach().to(torch::kFloat64).contiguous();
}

const double* host_data(const Tensor& t) { return t.defined() ? t.data_ptr<double>() : nullptr; }

// Optional parameters travel through autograd as empty tensors (undefined ones have no
// device, which autograd needs); an empty tensor means "not given".
bool given(const Tensor& t) { return t.defined() && t.numel() > 0; }

Tensor or_empty(const c10::optional<Tensor>& t) {
  return t.has_value() && t->defined() ? *t : torch::empty({0}, torch::kFloat64);
}

struct HostParams {
  Tensor offsets, alpha, delta, beta, gamma, alibi;
  kernels::EntmaxAttentionParams params;
};

HostParams make_params(const Tensor& q, int64_t window, const Tensor& offsets, const Tensor& alpha,
                       const Tensor& delta, const Tensor& beta, const Tensor& gamma,
                       const Tensor& alibi, bool softmax, double scale) {
  HostParams h;
  h.offsets = offsets.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  auto& p = h.params;
  p.base.batch_heads = q.size(0) * q.size(1);
  p.base.seq_len = q.size(2);
  p.base.head_dim = q.size(3);
  p.base.window = window;
  p.base.offsets = h.offsets.data_ptr<double>();
  p.base.num_offsets = h.offsets.numel();
  p.base.scale = scale;
  p.num_heads = q.size(1);
  p.softmax = softmax;
  if (!softmax) {
    TORCH_CHECK(given(alpha), kName, ": alpha is required unless softmax=True");
    h.alpha = host_param(alpha, q, "alpha", false);
    p.alpha = host_data(h.alpha);
  }
  const int count = given(delta) + given(beta) + given(gamma);
  TORCH_CHECK(count == 0 || count == 3, kName,
              ": give all of delta, beta, gamma (log-n scaling) or none");
  if (count == 3) {
    h.delta = host_param(delta, q, "delta", false);
    h.beta = host_param(beta, q, "beta", true);
    h.gamma = host_param(gamma, q, "gamma", true);
    TORCH_CHECK(beta.dim() == gamma.dim(), kName,
                ": beta and gamma must both be per head or both per query");
    p.log_n_scaling = true;
    p.per_query_scale = beta.dim() == 3;
    p.delta = host_data(h.delta);
    p.beta = host_data(h.beta);
    p.gamma = host_data(h.gamma);
  }
  if (given(alibi)) {
    TORCH_CHECK(!alibi.requires_grad(), kName, ": alibi slopes are fixed (no gradient)");
    h.alibi = host_param(alibi, q, "alibi", false);
    p.alibi_slopes = host_data(h.alibi);
  }
  // On the CPU every value is checked here; CUDA parameters' values are checked on the device.
  const std::string problem = kernels::validate_entmax_params(p, /*values_on_device=*/q.is_cuda());
  TORCH_CHECK(problem.empty(), kName, ": ", problem);
  return h;
}

double resolve_scale(c10::optional<double> scale, int64_t head_dim) {
  const double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(head_dim)));
  TORCH_CHECK(std::isfinite(s) && s > 0, kName, ": scale must be positive, got ", s);
  return s;
}

// The kernel throws std::invalid_argument; surface it as a torch error with its message.
template <typename F>
void run_kernel(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK(false, e.what());
  }
}

Tensor cpu_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                   const kernels::EntmaxAttentionParams& params) {
  Tensor out = torch::empty_like(q);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "entmax_attention_forward", [&] {
    run_kernel([&] {
      kernels::entmax_attention_forward_cpu<scalar_t>(
          params, q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
          out.data_ptr<scalar_t>());
    });
  });
  return out;
}

// The forward shared by the autograd op and reach::entmax_attention_forward: {out, saved}
// (saved: the CUDA kernels' forward state, empty on the CPU, whose backward recomputes).
// q, k, v contiguous.
std::array<Tensor, 2> entmax_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                     const Tensor& offsets, const Tensor& alpha,
                                     const Tensor& delta, const Tensor& beta, const Tensor& gamma,
                                     const Tensor& alibi, int64_t window, bool softmax,
                                     double scale, bool shape_sized_state = false) {
  const auto h = make_params(q, window, offsets, alpha, delta, beta, gamma, alibi, softmax, scale);
#ifdef REACH_ENTMAX_ATTENTION_CUDA
  if (q.is_cuda()) {
    auto [out, state] = entmax_cuda::forward(q, k, v, h.params, {alpha, delta, beta, gamma, alibi},
                                             shape_sized_state);
    return {out, state};
  }
#else
  (void)shape_sized_state;
#endif
  return {cpu_forward(q, k, v, h.params), torch::empty({0}, torch::kUInt8)};
}

// The backward shared by the autograd op and reach::entmax_attention_backward:
// {dq, dk, dv, d alpha, d delta, d beta, d gamma}; a parameter's gradient is undefined unless
// `need` asks for it and the parameter takes part (alpha unless softmax, delta/beta/gamma with
// the log-n scaling). q, k, v contiguous.
std::array<Tensor, 7> entmax_backward(const Tensor& grad_out_in, const Tensor& q, const Tensor& k,
                                      const Tensor& v, const Tensor& saved, const Tensor& offsets,
                                      const Tensor& alpha, const Tensor& delta, const Tensor& beta,
                                      const Tensor& gamma, const Tensor& alibi, int64_t window,
                                      bool softmax, double scale, std::array<bool, 4> need) {
  const auto h = make_params(q, window, offsets, alpha, delta, beta, gamma, alibi, softmax, scale);
  const Tensor grad_out = grad_out_in.to(q.scalar_type()).contiguous();
#ifdef REACH_ENTMAX_ATTENTION_CUDA
  if (q.is_cuda()) {
    // The CUDA backward returns per-row parameter gradients; they are summed per head here
    // (or kept per query for per-query beta and gamma), on the device.
    const bool want = need[0] || need[1] || need[2] || need[3];
    auto [dq, dk, dv, rows] = entmax_cuda::backward(q, k, v, grad_out, saved, h.params,
                                                    {alpha, delta, beta, gamma, alibi}, want);
    const int64_t B = q.size(0), H = q.size(1), n = q.size(2);
    auto grad = [&](int index, const Tensor& like) -> Tensor {
      if (!need[index] || !like.defined() || like.numel() == 0) return Tensor();
      const Tensor per_row = rows[index].view({B, H, n});
      const Tensor g = like.dim() == 3 ? per_row : per_row.sum(std::vector<int64_t>{0, 2});
      return g.to(like.options()).reshape(like.sizes());
    };
    const auto& p = h.params;
    return {dq,
            dk,
            dv,
            p.softmax ? Tensor() : grad(0, alpha),
            p.log_n_scaling ? grad(1, delta) : Tensor(),
            p.log_n_scaling ? grad(2, beta) : Tensor(),
            p.log_n_scaling ? grad(3, gamma) : Tensor()};
  }
#else
  (void)saved;
#endif
  Tensor dq = torch::empty_like(q), dk = torch::empty_like(k), dv = torch::empty_like(v);
  auto host_grad = [](const Tensor& like) {
    return like.defined() ? torch::zeros_like(like) : Tensor();
  };
  Tensor da = need[0] ? host_grad(h.alpha) : Tensor();
  Tensor dd = need[1] ? host_grad(h.delta) : Tensor();
  Tensor db = need[2] ? host_grad(h.beta) : Tensor();
  Tensor dg = need[3] ? host_grad(h.gamma) : Tensor();
  auto ptr = [](Tensor& t) { return t.defined() ? t.data_ptr<double>() : nullptr; };
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "entmax_attention_backward", [&] {
    run_kernel([&] {
      kernels::entmax_attention_backward_cpu<scalar_t>(
          h.params, q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
          grad_out.data_ptr<scalar_t>(), dq.data_ptr<scalar_t>(), dk.data_ptr<scalar_t>(),
          dv.data_ptr<scalar_t>(), ptr(da), ptr(dd), ptr(db), ptr(dg));
    });
  });
  auto back = [](const Tensor& g, const Tensor& like) {
    return g.defined() && g.numel() > 0 ? g.to(like.options()).reshape(like.sizes()) : Tensor();
  };
  return {dq, dk, dv, back(da, alpha), back(dd, delta), back(db, beta), back(dg, gamma)};
}

class EntmaxAttentionFunction : public torch::autograd::Function<EntmaxAttentionFunction> {
 public:
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& q_in,
                        const Tensor& k_in, const Tensor& v_in, const Tensor& offsets,
                        const Tensor& alpha, const Tensor& delta, const Tensor& beta,
                        const Tensor& gamma, const Tensor& alibi, int64_t window, bool softmax,
                        double scale) {
    const Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
    auto [out, saved] =
        entmax_forward(q, k, v, offsets, alpha, delta, beta, gamma, alibi, window, softmax, scale);
    ctx->save_for_backward({q, k, v, offsets, alpha, delta, beta, gamma, alibi, saved});
    ctx->saved_data["window"] = window;
    ctx->saved_data["softmax"] = softmax;
    ctx->saved_data["scale"] = scale;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    // Tensor inputs: q0 k1 v2 offsets3 alpha4 delta5 beta6 gamma7 alibi8.
    auto [dq, dk, dv, da, dd, db, dg] =
        entmax_backward(grads[0], s[0], s[1], s[2], s[9], s[3], s[4], s[5], s[6], s[7], s[8],
                        ctx->saved_data["window"].toInt(), ctx->saved_data["softmax"].toBool(),
                        ctx->saved_data["scale"].toDouble(),
                        {ctx->needs_input_grad(4), ctx->needs_input_grad(5),
                         ctx->needs_input_grad(6), ctx->needs_input_grad(7)});
    return {dq, dk, dv, Tensor(), da, dd, db, dg, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// The primitive ops behind Python's autograd registration (python/reach): the same forward
// and backward, with "not given" and "no gradient" as empty tensors (an op returns tensors).
Tensor defined_or_empty(const Tensor& t, const Tensor& q) {
  return t.defined() ? t : torch::empty({0}, q.options());
}

std::tuple<Tensor, Tensor> entmax_forward_op(const Tensor& q, const Tensor& k, const Tensor& v,
                                             int64_t window, const Tensor& offsets,
                                             const c10::optional<Tensor>& alpha,
                                             const c10::optional<Tensor>& delta,
                                             const c10::optional<Tensor>& beta,
                                             const c10::optional<Tensor>& gamma, bool softmax,
                                             double scale, const c10::optional<Tensor>& alibi) {
  check_inputs(q, k, v, offsets);
  TORCH_CHECK(std::isfinite(scale) && scale > 0, kName, ": scale must be positive, got ", scale);
  auto [out, saved] = entmax_forward(q.contiguous(), k.contiguous(), v.contiguous(), offsets,
                                     or_empty(alpha), or_empty(delta), or_empty(beta),
                                     or_empty(gamma), or_empty(alibi), window, softmax, scale,
                                     /*shape_sized_state=*/true);
  return {out, saved};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> entmax_backward_op(
    const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& saved,
    int64_t window, const Tensor& offsets, const c10::optional<Tensor>& alpha,
    const c10::optional<Tensor>& delta, const c10::optional<Tensor>& beta,
    const c10::optional<Tensor>& gamma, bool softmax, double scale,
    const c10::optional<Tensor>& alibi, std::array<bool, 4> params_grad) {
  check_inputs(q, k, v, offsets);
  TORCH_CHECK(grad_out.sizes() == q.sizes(), kName, ": grad_out shape ", grad_out.sizes(),
              " does not match q ", q.sizes());
  auto [dq, dk, dv, da, dd, db, dg] =
      entmax_backward(grad_out, q.contiguous(), k.contiguous(), v.contiguous(), saved, offsets,
                      or_empty(alpha), or_empty(delta), or_empty(beta), or_empty(gamma),
                      or_empty(alibi), window, softmax, scale, params_grad);
  return {dq,
          dk,
          dv,
          defined_or_empty(da, q),
          defined_or_empty(dd, q),
          defined_or_empty(db, q),
          defined_or_empty(dg, q)};
}

}  // namespace

Tensor entmax_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t window,
                        const Tensor& offsets, const c10::optional<Tensor>& alpha,
                        const c10::optional<Tensor>& delta, const c10::optional<Tensor>& beta,
                        const c10::optional<Tensor>& gamma, bool softmax,
                        c10::optional<double> scale, const c10::optional<Tensor>& alibi) {
  check_inputs(q, k, v, offsets);
  return EntmaxAttentionFunction::apply(q, k, v, offsets, or_empty(alpha), or_empty(delta),
                                        or_empty(beta), or_empty(gamma), or_empty(alibi), window,
                                        softmax, resolve_scale(scale, q.size(3)));
}

}  // namespace reach::ops

TORCH_LIBRARY_FRAGMENT(reach, m) {
  m.def(
      "entmax_attention(Tensor q, Tensor k, Tensor v, int window, Tensor offsets, "
      "Tensor? alpha, Tensor? delta=None, Tensor? beta=None, Tensor? gamma=None, "
      "bool softmax=False, float? scale=None, Tensor? alibi=None) -> Tensor");
}

TORCH_LIBRARY_IMPL(reach, CompositeImplicitAutograd, m) {
  m.impl("entmax_attention", &reach::ops::entmax_attention);
}

// The forward/backward pair (no autograd of their own) that python/reach registers autograd
// and fake implementations for, so that torch.compile traces through them.
TORCH_LIBRARY_FRAGMENT(reach, m) {
  m.def(
      "entmax_attention_forward(Tensor q, Tensor k, Tensor v, int window, Tensor offsets, "
      "Tensor? alpha, Tensor? delta, Tensor? beta, Tensor? gamma, bool softmax, float scale, "
      "Tensor? alibi) -> (Tensor, Tensor)");
  m.def(
      "entmax_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor saved, "
      "int window, Tensor offsets, Tensor? alpha, Tensor? delta, Tensor? beta, Tensor? gamma, "
      "bool softmax, float scale, Tensor? alibi, bool[4] params_grad) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(reach, CPU, m) {
  m.impl("entmax_attention_forward", &reach::ops::entmax_forward_op);
  m.impl("entmax_attention_backward", &reach::ops::entmax_backward_op);
}

#ifdef REACH_ENTMAX_ATTENTION_CUDA
TORCH_LIBRARY_IMPL(reach, CUDA, m) {
  m.impl("entmax_attention_forward", &reach::ops::entmax_forward_op);
  m.impl("entmax_attention_backward", &reach::ops::entmax_backward_op);
}
#endif
