#include "ops/chunk_attention_decode.hpp"

#include <torch/library.h>

#include <cmath>
#include <stdexcept>

#include "kernels/cpu/chunk_decode_attention.hpp"

namespace reach::ops {

using torch::Tensor;

namespace {

constexpr const char* kName = "chunk_attention_decode";

Tensor host_int64(const Tensor& t, int64_t batch, const char* what) {
  TORCH_CHECK(t.defined() && t.dim() == 1 && t.size(0) == batch, kName, ": ", what,
              " must be a 1-D tensor of batch = ", batch, " entries, got ",
              t.defined() ? t.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(!t.is_floating_point() && !t.is_complex(), kName, ": ", what,
              " must be integers, got ", t.scalar_type());
  return t.to(torch::kCPU, torch::kLong).contiguous();
}

double resolve(c10::optional<double> scale, int64_t dim, const char* what) {
  const double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(dim)));
  TORCH_CHECK(std::isfinite(s) && s > 0, kName, ": ", what, " must be positive, got ", s);
  return s;
}

}  // namespace

Tensor chunk_attention_decode(const Tensor& q_in, const Tensor& r_in, const Tensor& k_in,
                              const Tensor& v_in, const Tensor& l_in, const Tensor& lengths_in,
                              const ChunkAttentionOptions& o,
                              const c10::optional<Tensor>& top_ks_in,
                              const c10::optional<Tensor>& masses_in, Tensor* chunks_read) {
  for (const auto* t : {&q_in, &r_in, &k_in, &v_in, &l_in}) {
    TORCH_CHECK(t->defined(), kName, ": q, r, k_cache, v_cache and landmarks must be defined");
  }
  TORCH_CHECK(q_in.dim() == 3 || q_in.dim() == 4, kName,
              ": q must be [batch, heads, head_dim] or [batch, heads, queries, head_dim], got ",
              q_in.sizes());
  const bool several = q_in.dim() == 4;
  const int64_t b = q_in.size(0), d = q_in.size(-1), nq = several ? q_in.size(2) : 1;
  TORCH_CHECK(k_in.dim() == 4 && k_in.size(0) == b && k_in.size(3) == d, kName,
              ": k_cache must be [batch, kv_heads, capacity, head_dim] = [", b, ", *, *, ", d,
              "], got ", k_in.sizes());
  const int64_t hkv = k_in.size(1);
  TORCH_CHECK(v_in.sizes() == k_in.sizes(), kName, ": v_cache must have k_cache's shape ",
              k_in.sizes(), ", got ", v_in.sizes());
  if (several) {
    TORCH_CHECK(r_in.dim() == 4 && r_in.size(0) == b && r_in.size(1) == hkv && r_in.size(2) == nq,
                kName, ": r must be [batch, kv_heads, queries, retrieval_dim] = [", b, ", ", hkv,
                ", ", nq, ", *], got ", r_in.sizes());
  } else {
    TORCH_CHECK(r_in.dim() == 3 && r_in.size(0) == b && r_in.size(1) == hkv, kName,
                ": r must be [batch, kv_heads, retrieval_dim] = [", b, ", ", hkv, ", *], got ",
                r_in.sizes());
  }
  const int64_t dr = r_in.size(-1);
  TORCH_CHECK(l_in.dim() == 4 && l_in.size(0) == b && l_in.size(1) == hkv && l_in.size(3) == dr,
              kName, ": landmarks must be [batch, kv_heads, landmark_capacity, retrieval_dim] = [",
              b, ", ", hkv, ", *, ", dr, "], got ", l_in.sizes());
  const auto dtype = q_in.scalar_type();
  TORCH_CHECK(dtype == torch::kFloat32 || dtype == torch::kFloat64, kName,
              ": dtype must be float32 or float64, got ", dtype);
  for (const auto* t : {&r_in, &k_in, &v_in, &l_in}) {
    TORCH_CHECK(t->scalar_type() == dtype, kName,
                ": q, r, caches and landmarks must share one dtype");
    TORCH_CHECK(t->device().is_cpu() && q_in.device().is_cpu(), kName,
                ": only the CPU decode kernel exists; got a ", t->device(), " tensor");
  }
  const Tensor q = q_in.contiguous(), r = r_in.contiguous(), k = k_in.contiguous(),
               v = v_in.contiguous(), l = l_in.contiguous();
  const Tensor lengths = host_int64(lengths_in, b, "lengths");
  Tensor top_ks;
  if (top_ks_in.has_value() && top_ks_in->defined()) top_ks = host_int64(*top_ks_in, b, "top_ks");
  Tensor masses;
  if (masses_in.has_value() && masses_in->defined()) {
    TORCH_CHECK(masses_in->dim() == 1 && masses_in->size(0) == b && masses_in->is_floating_point(),
                kName, ": masses must be a 1-D floating tensor of batch = ", b, " entries, got ",
                masses_in->sizes());
    masses = masses_in->to(torch::kCPU, torch::kDouble).contiguous();
  }
  kernels::ChunkDecodeParams p;
  p.batch = b;
  p.query_heads = q.size(1);
  p.kv_heads = hkv;
  p.head_dim = d;
  p.retrieval_dim = dr;
  p.capacity = k.size(2);
  p.landmark_capacity = l.size(2);
  p.lengths = lengths.data_ptr<int64_t>();
  p.selection = o.selection;
  p.top_ks = top_ks.defined() ? top_ks.data_ptr<int64_t>() : nullptr;
  p.masses = masses.defined() ? masses.data_ptr<double>() : nullptr;
  p.queries = nq;
  p.weighting = o.weighting;
  p.scale = resolve(o.scale, d, "scale");
  p.retrieval_scale = resolve(o.retrieval_scale, p.retrieval_dim, "retrieval_scale");
  const std::string problem = kernels::validate_chunk_decode_params(p);
  TORCH_CHECK(problem.empty(), kName, ": ", problem);
  Tensor out = torch::empty_like(q);
  Tensor read;
  if (chunks_read != nullptr) read = torch::empty({b, hkv, nq}, torch::kLong);
  AT_DISPATCH_FLOATING_TYPES(dtype, "chunk_attention_decode", [&] {
    kernels::chunk_decode_attention_cpu<scalar_t>(
        p, q.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(),
        v.data_ptr<scalar_t>(), l.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
        read.defined() ? read.data_ptr<int64_t>() : nullptr);
  });
  if (chunks_read != nullptr) *chunks_read = read;
  return out;
}

}  // namespace reach::ops

namespace {

at::Tensor chunk_attention_decode_op(
    const at::Tensor& q, const at::Tensor& r, const at::Tensor& k_cache, const at::Tensor& v_cache,
    const at::Tensor& landmarks, const at::Tensor& lengths, int64_t chunk_size, int64_t top_k,
    int64_t window, c10::string_view budget, double fraction, int64_t min_k,
    c10::string_view weighting, c10::optional<double> scale, c10::optional<double> retrieval_scale,
    const c10::optional<at::Tensor>& top_ks, const c10::optional<at::Tensor>& masses) {
  using namespace reach;
  return ops::chunk_attention_decode(
      q, r, k_cache, v_cache, landmarks, lengths,
      ops::chunk_options_from_args(chunk_size, top_k, window, budget, fraction, min_k, weighting,
                                   scale, retrieval_scale),
      top_ks, masses);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(reach, m) {
  m.def(
      "chunk_attention_decode(Tensor q, Tensor r, Tensor k_cache, Tensor v_cache, "
      "Tensor landmarks, Tensor lengths, int chunk_size, int top_k, int window=0, "
      "str budget=\"fixed\", float fraction=1.0, int min_k=1, str weighting=\"softmax\", "
      "float? scale=None, float? retrieval_scale=None, Tensor? top_ks=None, "
      "Tensor? masses=None) -> Tensor");
}

TORCH_LIBRARY_IMPL(reach, CompositeExplicitAutograd, m) {
  m.impl("chunk_attention_decode", &chunk_attention_decode_op);
}
