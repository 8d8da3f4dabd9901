#include "ops/chunk_attention.hpp"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <cmath>
#include <string>

#include "kernels/cpu/chunk_attention.hpp"

namespace reach::ops {

using torch::Tensor;

namespace {

constexpr const char* kName = "chunk_attention";

// Shapes, dtypes and devices, checked before dispatch (which would pick one device).
void check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& r,
                  const Tensor& landmarks, const pattern::ChunkSelection& selection) {
  try {
    pattern::validate(selection);
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK(false, kName, ": ", e.what());
  }
  for (const auto* t : {&q, &k, &v, &r, &landmarks}) {
    TORCH_CHECK(t->defined(), kName, ": q, k, v, r and landmarks must be defined tensors");
  }
  TORCH_CHECK(q.dim() == 4, kName, ": q must have rank 4 [batch, heads, n, head_dim], got rank ",
              q.dim());
  const int64_t b = q.size(0), n = q.size(2), d = q.size(3);
  TORCH_CHECK(k.dim() == 4 && k.size(0) == b && k.size(2) == n && k.size(3) == d, kName,
              ": k must be [batch, kv_heads, n, head_dim] = [", b, ", *, ", n, ", ", d, "], got ",
              k.sizes());
  const int64_t hkv = k.size(1);
  TORCH_CHECK(hkv >= 1 && q.size(1) % hkv == 0, kName, ": query heads (", q.size(1),
              ") must be a multiple of kv heads (", hkv, ")");
  TORCH_CHECK(v.sizes() == k.sizes(), kName, ": v must have k's shape ", k.sizes(), ", got ",
              v.sizes());
  TORCH_CHECK(r.dim() == 4 && r.size(0) == b && r.size(1) == hkv && r.size(2) == n, kName,
              ": r must be [batch, kv_heads, n, retrieval_dim] = [", b, ", ", hkv, ", ", n,
              ", *], got ", r.sizes());
  const int64_t chunks = n / selection.chunk_size;
  TORCH_CHECK(landmarks.dim() == 4 && landmarks.size(0) == b && landmarks.size(1) == hkv &&
                  landmarks.size(2) == chunks && landmarks.size(3) == r.size(3),
              kName, ": landmarks must be [batch, kv_heads, n / chunk_size, retrieval_dim] = [", b,
              ", ", hkv, ", ", chunks, ", ", r.size(3), "], got ", landmarks.sizes());
  TORCH_CHECK(q.numel() > 0 && r.numel() > 0, kName, ": empty input (q ", q.sizes(), ", r ",
              r.sizes(), ")");
#ifdef REACH_CHUNK_ATTENTION_CUDA
  constexpr bool kCuda = true;  // ops/chunk_attention_cuda.cpp registers the CUDA kernels
#else
  constexpr bool kCuda = false;
#endif
  TORCH_CHECK(q.device().is_cpu() || (kCuda && q.device().is_cuda()), kName, ": no kernel for ",
              q.device().type(), " tensors (kernels: CPU", kCuda ? ", CUDA" : "", ")");
  const auto dtype = q.scalar_type();
  if (q.device().is_cpu()) {
    TORCH_CHECK(dtype == torch::kFloat32 || dtype == torch::kFloat64, kName,
                ": dtype must be float32 or float64 on the CPU, got ", dtype);
  } else {
    TORCH_CHECK(dtype == torch::kFloat32 || dtype == torch::kBFloat16, kName,
                ": dtype must be float32 or bfloat16 on CUDA, got ", dtype);
  }
  for (const auto* t : {&k, &v, &r, &landmarks}) {
    TORCH_CHECK(t->device() == q.device(), kName,
                ": q, k, v, r and landmarks must be on one device (q on ", q.device(), ", got ",
                t->device(), ")");
    TORCH_CHECK(t->scalar_type() == dtype, kName,
                ": q, k, v, r and landmarks must share one dtype (q is ", dtype, ", got ",
                t->scalar_type(), ")");
  }
}

double resolve(c10::optional<double> scale, int64_t dim, const char* what) {
  const double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(dim)));
  TORCH_CHECK(std::isfinite(s) && s > 0, kName, ": ", what, " must be positive, got ", s);
  return s;
}

kernels::ChunkAttentionParams make_params(const Tensor& q, const Tensor& k, const Tensor& r,
                                          const pattern::ChunkSelection& selection,
                                          kernels::ChunkWeighting weighting, double scale,
                                          double retrieval_scale) {
  kernels::ChunkAttentionParams p;
  p.batch = q.size(0);
  p.query_heads = q.size(1);
  p.kv_heads = k.size(1);
  p.seq_len = q.size(2);
  p.head_dim = q.size(3);
  p.retrieval_dim = r.size(3);
  p.selection = selection;
  p.weighting = weighting;
  p.scale = scale;
  p.retrieval_scale = retrieval_scale;
  const std::string problem = kernels::validate_chunk_params(p);
  TORCH_CHECK(problem.empty(), kName, ": ", problem);
  return p;
}

// The selection and weighting travel through the dispatcher as plain scalars.
pattern::ChunkSelection selection_of(int64_t chunk_size, int64_t top_k, int64_t window,
                                     c10::string_view budget, double fraction, int64_t min_k) {
  pattern::ChunkBudgetRule rule = pattern::ChunkBudgetRule::fixed;
  try {
    rule = pattern::parse_chunk_budget_rule(std::string(budget.data(), budget.size()));
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK(false, kName, ": ", e.what());
  }
  return {chunk_size, top_k, window, rule, fraction, min_k};
}

kernels::ChunkWeighting weighting_of(c10::string_view name) {
  kernels::ChunkWeighting weighting = kernels::ChunkWeighting::softmax;
  try {
    weighting = kernels::parse_chunk_weighting(std::string(name.data(), name.size()));
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK(false, kName, ": ", e.what());
  }
  return weighting;
}

std::string budget_name(const pattern::ChunkSelection& s) { return pattern::to_string(s.rule); }

using Forward = std::tuple<Tensor, Tensor, Tensor, Tensor>;
using Backward = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;

Forward chunk_forward_cpu(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                          const Tensor& r_in, const Tensor& l_in, int64_t chunk_size, int64_t top_k,
                          int64_t window, c10::string_view budget, double fraction, int64_t min_k,
                          c10::string_view weighting, double scale, double retrieval_scale) {
  const Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous(),
               r = r_in.contiguous(), l = l_in.contiguous();
  const auto p =
      make_params(q, k, r, selection_of(chunk_size, top_k, window, budget, fraction, min_k),
                  weighting_of(weighting), scale, retrieval_scale);
  Tensor out = torch::empty_like(q);
  Tensor indices =
      torch::empty({p.batch, p.kv_heads, p.seq_len, top_k}, q.options().dtype(torch::kLong));
  Tensor weights = torch::empty({p.batch, p.kv_heads, p.seq_len, top_k}, q.options());
  Tensor lse = torch::empty({p.batch, p.query_heads, p.seq_len, top_k}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "chunk_attention_forward", [&] {
    kernels::chunk_attention_forward_cpu<scalar_t>(
        p, q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
        r.data_ptr<scalar_t>(), l.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
        indices.data_ptr<int64_t>(), weights.data_ptr<scalar_t>(), lse.data_ptr<scalar_t>());
  });
  return {out, indices, weights, lse};
}

Backward chunk_backward_cpu(const Tensor& grad_out, const Tensor& q_in, const Tensor& k_in,
                            const Tensor& v_in, const Tensor& r_in, const Tensor& l_in,
                            const Tensor& indices_in, const Tensor& weights_in,
                            const Tensor& lse_in, int64_t chunk_size, int64_t top_k, int64_t window,
                            c10::string_view budget, double fraction, int64_t min_k,
                            c10::string_view weighting, double scale, double retrieval_scale) {
  const Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous(),
               r = r_in.contiguous(), l = l_in.contiguous();
  const Tensor go = grad_out.to(q.scalar_type()).contiguous();
  const Tensor indices = indices_in.contiguous(), weights = weights_in.contiguous(),
               lse = lse_in.contiguous();
  const auto p =
      make_params(q, k, r, selection_of(chunk_size, top_k, window, budget, fraction, min_k),
                  weighting_of(weighting), scale, retrieval_scale);
  TORCH_CHECK(indices.scalar_type() == torch::kLong &&
                  indices.sizes() == torch::IntArrayRef({p.batch, p.kv_heads, p.seq_len, top_k}),
              kName, ": saved indices must be int64 [B, Hkv, n, top_k], got ", indices.sizes());
  Tensor dq = torch::empty_like(q), dk = torch::empty_like(k), dv = torch::empty_like(v),
         dr = torch::empty_like(r), dl = torch::empty_like(l);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "chunk_attention_backward", [&] {
    kernels::chunk_attention_backward_cpu<scalar_t>(
        p, q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
        r.data_ptr<scalar_t>(), l.data_ptr<scalar_t>(), go.data_ptr<scalar_t>(),
        indices.data_ptr<int64_t>(), weights.data_ptr<scalar_t>(), lse.data_ptr<scalar_t>(),
        dq.data_ptr<scalar_t>(), dk.data_ptr<scalar_t>(), dv.data_ptr<scalar_t>(),
        dr.data_ptr<scalar_t>(), dl.data_ptr<scalar_t>());
  });
  return {dq, dk, dv, dr, dl};
}

using ForwardSignature = Forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                 const Tensor&, int64_t, int64_t, int64_t, c10::string_view, double,
                                 int64_t, c10::string_view, double, double);
using BackwardSignature = Backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                   const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                   const Tensor&, int64_t, int64_t, int64_t, c10::string_view,
                                   double, int64_t, c10::string_view, double, double);

// Called through the dispatcher so that the kernel of the tensors' device runs.
const c10::TypedOperatorHandle<ForwardSignature>& forward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("reach::chunk_attention_forward", "")
                             .typed<ForwardSignature>();
  return op;
}

const c10::TypedOperatorHandle<BackwardSignature>& backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("reach::chunk_attention_backward", "")
                             .typed<BackwardSignature>();
  return op;
}

class ChunkAttentionFunction : public torch::autograd::Function<ChunkAttentionFunction> {
 public:
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& r, const Tensor& landmarks,
                        const pattern::ChunkSelection& s, kernels::ChunkWeighting weighting,
                        double scale, double retrieval_scale) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const std::string budget = budget_name(s), weights_name = kernels::to_string(weighting);
    auto [out, indices, weights, lse] =
        forward_op().call(q, k, v, r, landmarks, s.chunk_size, s.top_k, s.window, budget,
                          s.fraction, s.min_k, weights_name, scale, retrieval_scale);
    ctx->save_for_backward({q, k, v, r, landmarks, indices, weights, lse});
    ctx->saved_data["chunk_size"] = s.chunk_size;
    ctx->saved_data["top_k"] = s.top_k;
    ctx->saved_data["window"] = s.window;
    ctx->saved_data["budget"] = budget;
    ctx->saved_data["fraction"] = s.fraction;
    ctx->saved_data["min_k"] = s.min_k;
    ctx->saved_data["weighting"] = weights_name;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["retrieval_scale"] = retrieval_scale;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    auto& d = ctx->saved_data;
    auto [dq, dk, dv, dr, dl] = backward_op().call(
        grads[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], d["chunk_size"].toInt(),
        d["top_k"].toInt(), d["window"].toInt(), d["budget"].toStringRef(),
        d["fraction"].toDouble(), d["min_k"].toInt(), d["weighting"].toStringRef(),
        d["scale"].toDouble(), d["retrieval_scale"].toDouble());
    return {dq, dk, dv, dr, dl, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

Tensor chunk_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& r,
                       const Tensor& landmarks, const ChunkAttentionOptions& o) {
  check_inputs(q, k, v, r, landmarks, o.selection);
  return ChunkAttentionFunction::apply(q, k, v, r, landmarks, o.selection, o.weighting,
                                       resolve(o.scale, q.size(3), "scale"),
                                       resolve(o.retrieval_scale, r.size(3), "retrieval_scale"));
}

std::tuple<Tensor, Tensor, Tensor, Tensor> chunk_attention_forward(const Tensor& q, const Tensor& k,
                                                                   const Tensor& v, const Tensor& r,
                                                                   const Tensor& landmarks,
                                                                   const ChunkAttentionOptions& o) {
  check_inputs(q, k, v, r, landmarks, o.selection);
  const auto& s = o.selection;
  return forward_op().call(q, k, v, r, landmarks, s.chunk_size, s.top_k, s.window, budget_name(s),
                           s.fraction, s.min_k, kernels::to_string(o.weighting),
                           resolve(o.scale, q.size(3), "scale"),
                           resolve(o.retrieval_scale, r.size(3), "retrieval_scale"));
}

ChunkAttentionOptions chunk_options_from_args(int64_t chunk_size, int64_t top_k, int64_t window,
                                              c10::string_view budget, double fraction,
                                              int64_t min_k, c10::string_view weighting,
                                              c10::optional<double> scale,
                                              c10::optional<double> retrieval_scale) {
  ChunkAttentionOptions o;
  o.selection = selection_of(chunk_size, top_k, window, budget, fraction, min_k);
  o.weighting = weighting_of(weighting);
  o.scale = scale;
  o.retrieval_scale = retrieval_scale;
  return o;
}

}  // namespace reach::ops

namespace {

at::Tensor chunk_attention_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& r, const at::Tensor& landmarks, int64_t chunk_size,
                              int64_t top_k, int64_t window, c10::string_view budget,
                              double fraction, int64_t min_k, c10::string_view weighting,
                              c10::optional<double> scale, c10::optional<double> retrieval_scale) {
  using namespace reach;
  return ops::chunk_attention(
      q, k, v, r, landmarks,
      ops::chunk_options_from_args(chunk_size, top_k, window, budget, fraction, min_k, weighting,
                                   scale, retrieval_scale));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(reach, m) {
  m.def(
      "chunk_attention(Tensor q, Tensor k, Tensor v, Tensor r, Tensor landmarks, int chunk_size, "
      "int top_k, int window=0, str budget=\"fixed\", float fraction=1.0, int min_k=1, "
      "str weighting=\"softmax\", float? scale=None, float? retrieval_scale=None) -> Tensor");
  m.def(
      "chunk_attention_forward(Tensor q, Tensor k, Tensor v, Tensor r, Tensor landmarks, "
      "int chunk_size, int top_k, int window, str budget, float fraction, int min_k, "
      "str weighting, float scale, float retrieval_scale) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "chunk_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor r, "
      "Tensor landmarks, Tensor indices, Tensor weights, Tensor lse, int chunk_size, int top_k, "
      "int window, str budget, float fraction, int min_k, str weighting, float scale, "
      "float retrieval_scale) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(reach, CompositeImplicitAutograd, m) {
  m.impl("chunk_attention", &chunk_attention_op);
}

TORCH_LIBRARY_IMPL(reach, CPU, m) {
  m.impl("chunk_attention_forward", &reach::ops::chunk_forward_cpu);
  m.impl("chunk_attention_backward", &reach::ops::chunk_backward_cpu);
}
