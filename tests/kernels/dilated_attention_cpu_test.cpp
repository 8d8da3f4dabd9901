// The CPU kernel against the dense float64 reference (explicit mask), on random inputs.
//
// Tolerances (max |got - want| / max |want|): the float64 kernel differs from the reference only
// in summation order, so it must agree to 1e-10 (offset gradients 1e-9: sums over every query).
// The float32 kernel accumulates in float32 over at most a few hundred terms of length <= 128:
// its error is a few hundred ulps of 2^-24 ~ 6e-8 at worst, so 5e-5 (forward) and 1e-4
// (backward) are generous but still catch any indexing or masking mistake (those give O(1)
// errors). Finite differences: central, step 1e-6, in float64 (1e-6, see harness.hpp).
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/cpu/dilated_attention.hpp"
#include "kernels/cpu/reference_attention.hpp"
#include "tests/kernels/harness.hpp"

namespace reach::harness {
namespace {

using kernels::DilatedAttentionParams;

struct Shape {
  int64_t bh, n, d, window;
  std::vector<double> offsets;
  const char* why;
  int64_t group = 1;  // query heads per K/V head (grouped-query attention)

  size_t size() const { return static_cast<size_t>(bh * n * d); }
  size_t kv_size() const { return static_cast<size_t>(bh / group * n * d); }
  size_t rows() const { return static_cast<size_t>(bh * n); }
  std::string name() const {
    bool fractional = false;
    for (const double x : offsets) fractional |= x != std::floor(x);
    std::string name = shape_part("bh", double(bh)) + "_" + shape_part("n", double(n)) + "_" +
                       shape_part("d", double(d)) + "_" + shape_part("W", double(window)) + "_" +
                       shape_part("K", double(offsets.size())) + (fractional ? "_frac" : "");
    if (group > 1) name.append("_").append(shape_part("gqa", double(group)));
    return name;
  }
  DilatedAttentionParams params() const {
    DilatedAttentionParams p;
    p.batch_heads = bh;
    p.seq_len = n;
    p.head_dim = d;
    p.window = window;
    p.offsets = offsets.data();
    p.num_offsets = static_cast<int64_t>(offsets.size());
    p.scale = 1.0 / std::sqrt(static_cast<double>(d));
    p.kv_group = group;
    return p;
  }
};

std::vector<Shape> shapes() {
  return {
      {1, 1, 16, 4, {}, "single token"},
      {2, 7, 16, 64, {}, "n smaller than W: dense causal"},
      {1, 50, 32, 8, {8, 13, 21, 34, 55, 89}, "offsets beyond the sequence start"},
      {3, 97, 64, 5, {5, 9, 14, 23, 37}, "n prime, batch*heads > 1"},
      {2, 130, 128, 16, {16.5, 26.4, 42.9, 69.3}, "fractional (learned) offsets, d = 128"},
      {1, 64, 24, 3, {3.0, 4.25, 7.75, 12.0, 19.5}, "mixed integer and fractional"},
      {4, 33, 48, 1, {1.5, 2.0, 3.5}, "W = 1"},
      {4, 61, 32, 6, {6, 10, 16, 26, 42}, "grouped-query attention: 4 heads over 2 K/V", 2},
      {8, 45, 16, 4, {4.5, 7.25, 11.0, 18.5}, "GQA 8 over 2 K/V, fractional offsets", 4},
      {3, 20, 16, 64, {}, "GQA, every query head on one K/V: dense causal", 3},
  };
}

template <typename T>
struct Forward {
  std::vector<T> out, lse;
};

template <typename T>
Forward<T> forward(const DilatedAttentionParams& p, const std::vector<T>& q,
                   const std::vector<T>& k, const std::vector<T>& v) {
  Forward<T> f{std::vector<T>(q.size(), NAN),
               std::vector<T>(static_cast<size_t>(p.batch_heads * p.seq_len), NAN)};
  kernels::dilated_attention_forward_cpu<T>(p, q.data(), k.data(), v.data(), f.out.data(),
                                            f.lse.data());
  return f;
}

struct Inputs {
  std::vector<double> q, k, v, grad_out;
};

Inputs inputs(const Shape& s, const std::string& name) {
  Rng rng(seed_of(name));
  return {rng.normal(s.size()), rng.normal(s.kv_size()), rng.normal(s.kv_size()),
          rng.normal(s.size())};
}

template <typename T>
void check_forward(const Shape& s, const std::string& name, double bound, Report& r) {
  const auto p = s.params();
  const auto in = inputs(s, name);
  const auto want = kernels::reference::forward(p, in.q, in.k, in.v);
  const auto got = forward<T>(p, std::vector<T>(in.q.begin(), in.q.end()),
                              std::vector<T>(in.k.begin(), in.k.end()),
                              std::vector<T>(in.v.begin(), in.v.end()));
  r.max_rel("out", to_double(got.out), want, bound);
}

template <typename T>
void check_backward(const Shape& s, const std::string& name, double bound, double offsets_bound,
                    Report& r) {
  const auto p = s.params();
  const auto in = inputs(s, name);
  const auto want = kernels::reference::backward(p, in.q, in.k, in.v, in.grad_out);
  const std::vector<T> q(in.q.begin(), in.q.end()), k(in.k.begin(), in.k.end()),
      v(in.v.begin(), in.v.end()), go(in.grad_out.begin(), in.grad_out.end());
  const auto f = forward<T>(p, q, k, v);
  std::vector<T> dq(s.size(), NAN), dk(s.kv_size(), NAN), dv(s.kv_size(), NAN);
  std::vector<double> doff(s.offsets.size(), NAN);
  const bool with_offsets = offsets_bound > 0 && !s.offsets.empty();
  kernels::dilated_attention_backward_cpu<T>(p, q.data(), k.data(), v.data(), f.out.data(),
                                             f.lse.data(), go.data(), dq.data(), dk.data(),
                                             dv.data(), with_offsets ? doff.data() : nullptr);
  r.max_rel("dq", to_double(dq), want.q, bound);
  r.max_rel("dk", to_double(dk), want.k, bound);
  r.max_rel("dv", to_double(dv), want.v, bound);
  if (with_offsets) r.max_rel("doffsets", doff, want.offsets, offsets_bound);
}

// Central differences on loss = sum(out * G) in float64, for q, k, v (25 random elements each)
// and every offset.
void check_finite_differences(Shape s, Report& r) {
  Rng rng(7);
  auto p = s.params();
  auto q = rng.normal(s.size()), k = rng.normal(s.kv_size()), v = rng.normal(s.kv_size());
  const auto g = rng.normal(s.size());
  std::vector<double> out(s.size()), lse(s.rows());
  auto loss = [&]() {
    p.offsets = s.offsets.data();
    kernels::dilated_attention_forward_cpu<double>(p, q.data(), k.data(), v.data(), out.data(),
                                                   lse.data());
    double l = 0;
    for (size_t i = 0; i < s.size(); ++i) l += out[i] * g[i];
    return l;
  };
  loss();
  std::vector<double> dq(s.size()), dk(s.kv_size()), dv(s.kv_size()), doff(s.offsets.size());
  kernels::dilated_attention_backward_cpu<double>(p, q.data(), k.data(), v.data(), out.data(),
                                                  lse.data(), g.data(), dq.data(), dk.data(),
                                                  dv.data(), doff.data());
  for (auto [x, grad, what] :
       {std::tuple{&q, &dq, "dq"}, std::tuple{&k, &dk, "dk"}, std::tuple{&v, &dv, "dv"}}) {
    const auto picks = sample_indices(x->size(), 25, rng.engine());
    r.fd(what, finite_difference_error(*x, *grad, loss, picks), 1e-6);
  }
  r.fd("doffsets", finite_difference_error(s.offsets, doff, loss), 1e-6);
}

REACH_OP_CASES(dilated_attention_cpu_cases) {
  for (const auto& s : shapes()) {
    const std::string shape = s.name();
    auto add = [&](const char* dtype, const char* check, std::function<void(Report&)> run) {
      registry.add({"dilated_attention", "cpu", dtype, shape, check, std::move(run)});
    };
    const std::string id = "dilated_attention_cpu." + shape;
    add("f64", "forward", [s, id](Report& r) { check_forward<double>(s, id, 1e-10, r); });
    add("f32", "forward", [s, id](Report& r) { check_forward<float>(s, id, 5e-5, r); });
    add("f64", "backward",
        [s, id](Report& r) { check_backward<double>(s, id + ".b", 1e-10, 1e-9, r); });
    // float32 without the offset gradient (the static schedules' path).
    add("f32", "backward",
        [s, id](Report& r) { check_backward<float>(s, id + ".b", 1e-4, 0.0, r); });
  }
  const Shape fd_shape{2, 40, 16, 4, {4.3, 6.9, 11.2, 18.1, 29.3}, "fractional offsets"};
  registry.add({"dilated_attention", "cpu", "f64", fd_shape.name(), "fd",
                [fd_shape](Report& r) { check_finite_differences(fd_shape, r); }});
  const Shape fd_gqa{4, 30, 16, 3, {3.5, 5.4, 8.75, 14.2}, "GQA, fractional offsets", 2};
  registry.add({"dilated_attention", "cpu", "f64", fd_gqa.name(), "fd",
                [fd_gqa](Report& r) { check_finite_differences(fd_gqa, r); }});
}

TEST(DilatedAttentionCpu, RejectsInvalidParams) {
  std::vector<double> buf(64, 0.5), out(64), lse(4);
  std::vector<double> inside_window{2.0}, unsorted{9.0, 8.0}, nonfinite{INFINITY};
  auto run = [&](DilatedAttentionParams p) {
    kernels::dilated_attention_forward_cpu<double>(p, buf.data(), buf.data(), buf.data(),
                                                   out.data(), lse.data());
  };
  DilatedAttentionParams p{1, 4, 16, 4, nullptr, 0, 0.25};
  EXPECT_NO_THROW(run(p));
  auto bad = p;
  bad.window = 0;
  EXPECT_THROW(run(bad), std::invalid_argument);
  bad = p;
  bad.offsets = inside_window.data();
  bad.num_offsets = 1;
  EXPECT_THROW(run(bad), std::invalid_argument);
  bad = p;
  bad.offsets = unsorted.data();
  bad.num_offsets = 2;
  EXPECT_THROW(run(bad), std::invalid_argument);
  bad = p;
  bad.offsets = nonfinite.data();
  bad.num_offsets = 1;
  EXPECT_THROW(run(bad), std::invalid_argument);
  bad = p;
  bad.scale = -1;
  EXPECT_THROW(run(bad), std::invalid_argument);
  bad = p;
  bad.batch_heads = 3;
  bad.kv_group = 2;  // must divide batch * heads
  EXPECT_THROW(run(bad), std::invalid_argument);
  bad = p;
  bad.num_offsets = 3;  // null pointer
  EXPECT_THROW(run(bad), std::invalid_argument);
}

// out_heads (the token-major output) must divide batch * heads, and only the CUDA
// tensor-core kernels take it: the CPU kernel says so rather than writing the wrong rows.
TEST(DilatedAttentionCpu, RejectsATokenMajorOutputLayout) {
  DilatedAttentionParams p{2, 4, 16, 4, nullptr, 0, 0.25};
  p.out_heads = -1;
  EXPECT_NE(kernels::validate_params(p).find("out_heads"), std::string::npos);
  p.out_heads = 3;  // does not divide batch * heads = 2
  EXPECT_NE(kernels::validate_params(p).find("out_heads"), std::string::npos);
  p.out_heads = 2;
  EXPECT_EQ(kernels::validate_params(p), "");
  std::vector<double> buf(128, 0.5), out(128), lse(8);
  try {
    kernels::dilated_attention_forward_cpu<double>(p, buf.data(), buf.data(), buf.data(),
                                                   out.data(), lse.data());
    FAIL() << "the CPU kernel took a token-major output";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("token-major"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace reach::harness
