// The torch op against an independent float64 dense reference built with torch autograd
// (explicit boolean mask over window + offset diagonals), the learned-alpha gradient by
// finite differences, the CUDA op (bf16) against the float64 CPU op, the registered
// TORCH_LIBRARY op, and the errors for bad input. Op harness cases: tests/kernels/harness.hpp.
//
// Tolerances (max |got - want| / max |want|): float64 1e-10 (outputs) and 1e-9 (gradients):
// the op and the composite differ only in summation order; float32 1e-4 and 1e-3 (a few hundred
// float32 terms per element). Finite differences: central, step 1e-6, 1e-6 (harness.hpp). The
// CUDA op: relative L2 within the bf16 rule (2x the cost of rounding the float64 result to
// bf16, + 1e-4), the offset gradient within 1e-2 (see tests/kernels/dilated_attention_cuda_test).
#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "ops/dilated_attention.hpp"
#include "tests/ops/torch_harness.hpp"

namespace reach::harness {
namespace {

using ops::dilated_attention;
using ops::dilated_attention_learned;
using ops::dilated_attention_static;

torch::Tensor masked_reference(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, int64_t window,
                               const std::vector<int64_t>& offsets) {
  const int64_t n = q.size(2);
  auto i = torch::arange(n, torch::kLong).unsqueeze(1);
  auto j = torch::arange(n, torch::kLong).unsqueeze(0);
  auto dist = i - j;
  auto mask = (dist >= 0) & (dist < window);
  for (int64_t d : offsets) mask = mask | (dist == d);
  auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(3)));
  scores = scores.masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity());
  return torch::matmul(torch::softmax(scores, -1), v);
}

struct Shape {
  int64_t b, h, n, d, w, reach;
  std::string name() const {
    return shape_part("b", double(b)) + "_" + shape_part("h", double(h)) + "_" +
           shape_part("n", double(n)) + "_" + shape_part("d", double(d)) + "_" +
           shape_part("W", double(w)) + "_" + shape_part("R", double(reach));
  }
};

// Fibonacci offsets at alpha 1.3 (pattern/), the static op against the masked composite.
void check_static_op(const Shape& s, torch::ScalarType dtype, uint64_t seed, Report& r) {
  torch::manual_seed(seed);
  const pattern::DilationSpec spec{pattern::OffsetBase::fibonacci, 1.3, s.w, s.reach};
  const auto offsets = pattern::integer_offsets(spec);
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  auto q = torch::randn({s.b, s.h, s.n, s.d}, opts).requires_grad_();
  auto k = torch::randn({s.b, s.h, s.n, s.d}, opts).requires_grad_();
  auto v = torch::randn({s.b, s.h, s.n, s.d}, opts).requires_grad_();
  auto g = torch::randn({s.b, s.h, s.n, s.d}, opts);
  auto want = masked_reference(q, k, v, s.w, offsets);
  auto ref_grads = torch::autograd::grad({want}, {q, k, v}, {g});

  const double tol = dtype == torch::kFloat64 ? 1e-10 : 1e-4;
  auto qc = q.detach().to(dtype).requires_grad_();
  auto kc = k.detach().to(dtype).requires_grad_();
  auto vc = v.detach().to(dtype).requires_grad_();
  auto got = dilated_attention_static(qc, kc, vc, spec);
  r.max_rel("out", host_values(got), host_values(want), tol);
  auto grads = torch::autograd::grad({got}, {qc, kc, vc}, {g.to(dtype)});
  const char* names[] = {"dq", "dk", "dv"};
  for (int t = 0; t < 3; ++t) {
    r.max_rel(names[t], host_values(grads[t]), host_values(ref_grads[t]), tol * 10);
  }
}

// d loss / d alpha of the learned schedule against central differences at three alphas, and
// the same gradient when alpha's value is handed in (as a model does, to spare a device read).
void check_learned_alpha(Report& r) {
  torch::manual_seed(1);
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  auto q = torch::randn({1, 2, 90, 16}, opts), k = torch::randn({1, 2, 90, 16}, opts),
       v = torch::randn({1, 2, 90, 16}, opts), g = torch::randn({1, 2, 90, 16}, opts);
  const auto base = pattern::OffsetBase::fibonacci;
  for (const double a0 : {1.37, 2.21, 3.05}) {
    const std::string at = " at alpha " + std::to_string(a0);
    auto alpha = torch::tensor(a0, opts).requires_grad_();
    (dilated_attention_learned(q, k, v, alpha, base, 6, 80) * g).sum().backward();
    const double analytic = alpha.grad().item<double>();
    const auto fd = finite_difference_error(
        {0}, [&](size_t) { return analytic; },
        [&](size_t, double delta) {
          auto shifted = torch::tensor(a0 + delta, opts);
          return (dilated_attention_learned(q, k, v, shifted, base, 6, 80) * g)
              .sum()
              .item<double>();
        });
    r.fd("dalpha" + at, fd, 1e-6);
    if (analytic == 0.0) r.fail("d alpha is exactly zero" + at);
    auto alpha2 = torch::tensor(a0, opts).requires_grad_();
    (dilated_attention_learned(q, k, v, alpha2, base, 6, 80, a0) * g).sum().backward();
    // (Not bit-equal: the CPU backward sums d offsets over threads in a varying order.)
    r.lt("dalpha with alpha_value handed in, rel. difference" + at,
         std::abs(alpha2.grad().item<double>() - analytic) / std::abs(analytic), 1e-9);
  }
}

// The CUDA op (bf16) against the float64 CPU op through autograd, on the same bf16-rounded
// inputs: learned fractional offsets (CUDA cores, with the offset gradient) and integer
// Fibonacci offsets (tensor cores). A head_dim other than 64 or 128 runs zero-padded to the
// kernels' width (exact, so the same bf16 rule holds).
void check_cuda_op(const std::vector<double>& offsets, bool learn_offsets, uint64_t seed, Report& r,
                   int64_t head_dim = 64) {
  if (!torch::cuda::is_available()) return r.skip("no CUDA device");
  torch::manual_seed(seed);
  const int64_t window = 16;
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto draw = [&] {
    return torch::randn({2, 3, 777, head_dim}, f64).to(torch::kBFloat16).to(torch::kFloat64);
  };
  const auto q = draw(), k = draw(), v = draw(), g = draw();
  const auto offs = torch::tensor(offsets, f64);
  std::vector<std::vector<double>> results[2];
  int side = 0;
  for (const auto& [device, dtype] :
       {std::pair{torch::kCPU, torch::kFloat64}, std::pair{torch::kCUDA, torch::kBFloat16}}) {
    // Fresh leaves on each side (to() returns q itself for the float64 CPU side).
    auto leaf = [&](const torch::Tensor& t) {
      return t.to(device, dtype).detach().clone().requires_grad_();
    };
    auto qq = leaf(q), kk = leaf(k), vv = leaf(v);
    auto oo = offs.clone().requires_grad_(learn_offsets);
    auto out = dilated_attention(qq, kk, vv, window, oo);
    out.backward(g.to(device, dtype));
    results[side] = {host_values(out), host_values(qq.grad()), host_values(kk.grad()),
                     host_values(vv.grad())};
    if (learn_offsets) results[side].push_back(host_values(oo.grad()));
    ++side;
  }
  const char* names[] = {"out", "dq", "dk", "dv"};
  for (int t = 0; t < 4; ++t) r.bf16(names[t], results[1][t], results[0][t]);
  if (learn_offsets) r.rel_l2("doffsets", results[1][4], results[0][4], 1e-2);
}

REACH_OP_CASES(dilated_attention_op_cases) {
  for (const auto& s : {Shape{1, 1, 10, 16, 64, 64}, Shape{2, 3, 77, 32, 8, 60},
                        Shape{1, 2, 200, 64, 16, 190}, Shape{2, 1, 129, 128, 4, 100}}) {
    for (const auto& [dtype, name] :
         {std::pair{torch::kFloat64, "f64"}, std::pair{torch::kFloat32, "f32"}}) {
      OpCase c{"dilated_attention", "torch", name, s.name() + "_alpha1p3", "fwd_bwd", {}};
      const uint64_t seed = seed_of(c.name());
      c.run = [s, dtype, seed](Report& r) { check_static_op(s, dtype, seed, r); };
      registry.add(std::move(c));
    }
  }
  registry.add({"dilated_attention_learned", "torch", "f64", "b1_h2_n90_d16_W6_R80", "fd_alpha",
                check_learned_alpha});
  registry.add({"dilated_attention", "torch_cuda", "bf16", "b2_h3_n777_d64_W16_K6_frac",
                "fwd_bwd_doffsets", [](Report& r) {
                  check_cuda_op({21.5, 34.0, 55.25, 89.75, 144.0, 233.5}, true, 0, r);
                }});
  registry.add({"dilated_attention", "torch_cuda", "bf16", "b2_h3_n777_d64_W16_K8", "fwd_bwd",
                [](Report& r) {
                  const auto ints = pattern::integer_offsets(
                      {pattern::OffsetBase::fibonacci, 1.0, 21, 610});  // 21, 34, ..., 610
                  check_cuda_op(std::vector<double>(ints.begin(), ints.end()), false, 1, r);
                }});
  registry.add(
      {"dilated_attention", "torch_cuda", "bf16", "b2_h3_n777_d16_W16_K8_padded", "fwd_bwd",
       [](Report& r) {
         const auto ints = pattern::integer_offsets({pattern::OffsetBase::fibonacci, 1.0, 21, 610});
         check_cuda_op(std::vector<double>(ints.begin(), ints.end()), false, 2, r, 16);
       }});
  registry.add({"dilated_attention", "torch_cuda", "bf16", "b2_h3_n777_d96_W16_K6_frac_padded",
                "fwd_bwd_doffsets", [](Report& r) {
                  check_cuda_op({21.5, 34.0, 55.25, 89.75, 144.0, 233.5}, true, 3, r, 96);
                }});
}

// Grouped-query attention: K/V with fewer heads, read in place, equals the op over K/V
// repeated per query head; the K/V gradient is the sum over each group's heads. Float64 on
// the CPU (1e-12: only summation order differs); bf16 on CUDA against the float64 CPU op
// (the bf16 rule).
void check_grouped_kv(torch::Device device, torch::ScalarType dtype, Report& r) {
  if (device.is_cuda() && !torch::cuda::is_available()) return r.skip("no CUDA device");
  torch::manual_seed(11);
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const int64_t heads = 8, kv_heads = 2, n = 300, d = 64, window = 13;
  auto draw = [&](int64_t h) {
    return torch::randn({2, h, n, d}, f64).to(torch::kBFloat16).to(torch::kFloat64);
  };
  const auto q = draw(heads), k = draw(kv_heads), v = draw(kv_heads), g = draw(heads);
  const auto offsets = torch::tensor(std::vector<double>{20, 32, 51, 82, 134, 216}, f64);
  auto run = [&](torch::Device dev, torch::ScalarType type, bool grouped) {
    auto leaf = [&](const torch::Tensor& t) {
      return t.to(dev, type).detach().clone().requires_grad_();
    };
    auto qq = leaf(q), kk = leaf(k), vv = leaf(v);
    const auto kin = grouped ? kk : kk.repeat_interleave(heads / kv_heads, 1);
    const auto vin = grouped ? vv : vv.repeat_interleave(heads / kv_heads, 1);
    auto out = dilated_attention(qq, kin, vin, window, offsets);
    out.backward(g.to(dev, type));
    return std::vector<std::vector<double>>{host_values(out), host_values(qq.grad()),
                                            host_values(kk.grad()), host_values(vv.grad())};
  };
  const auto want = run(torch::kCPU, torch::kFloat64, false);
  const auto got = run(device, dtype, true);
  const char* names[] = {"out", "dq", "dk", "dv"};
  for (int t = 0; t < 4; ++t) {
    if (dtype == torch::kBFloat16) {
      r.bf16(names[t], got[t], want[t]);
    } else {
      r.rel_l2(names[t], got[t], want[t], 1e-12);
    }
  }
}

REACH_OP_CASES(dilated_attention_gqa_cases) {
  registry.add({"dilated_attention", "torch", "f64", "b2_hq8_hkv2_n300_d64_W13_K6_gqa", "fwd_bwd",
                [](Report& r) { check_grouped_kv(torch::kCPU, torch::kFloat64, r); }});
  registry.add({"dilated_attention", "torch_cuda", "bf16", "b2_hq8_hkv2_n300_d64_W13_K6_gqa",
                "fwd_bwd", [](Report& r) { check_grouped_kv(torch::kCUDA, torch::kBFloat16, r); }});
}

// token_major_out: the output is a [B, H, n, d] view of a token-major [B, n, H, d] tensor and
// the gradient arrives token-major too (as the output projection hands it back). Values and
// gradients equal the heads-first run exactly (the kernels compute the same numbers, only the
// addresses of out and grad_out change; the CPU and non-tensor-core CUDA paths copy), and both
// are checked against the float64 CPU op (the bf16 rule on CUDA, 1e-12 on the CPU).
void check_token_major_out(torch::Device device, torch::ScalarType dtype, int64_t head_dim,
                           int64_t kv_heads, const std::vector<double>& offsets, bool learn_offsets,
                           Report& r) {
  if (device.is_cuda() && !torch::cuda::is_available()) return r.skip("no CUDA device");
  torch::manual_seed(23);
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const int64_t heads = 4, n = 333, window = 16;
  auto draw = [&](int64_t h) {
    return torch::randn({2, h, n, head_dim}, f64).to(torch::kBFloat16).to(torch::kFloat64);
  };
  const auto q = draw(heads), k = draw(kv_heads), v = draw(kv_heads), g = draw(heads);
  const auto offs = torch::tensor(offsets, f64);
  auto run = [&](torch::Device dev, torch::ScalarType type, bool token_major) {
    auto leaf = [&](const torch::Tensor& t) {
      return t.to(dev, type).detach().clone().requires_grad_();
    };
    auto qq = leaf(q), kk = leaf(k), vv = leaf(v);
    auto oo = offs.clone().requires_grad_(learn_offsets);
    auto out = dilated_attention(qq, kk, vv, window, oo, c10::nullopt, token_major);
    if (token_major && !ops::is_token_major(out)) r.fail("out is not token-major");
    if (!token_major && !out.is_contiguous()) r.fail("out is not contiguous");
    const auto grad = g.to(dev, type);
    out.backward(token_major ? ops::token_major_copy(grad) : grad);
    std::vector<std::vector<double>> got{host_values(out), host_values(qq.grad()),
                                         host_values(kk.grad()), host_values(vv.grad())};
    if (learn_offsets) got.push_back(host_values(oo.grad()));
    return got;
  };
  const auto want = run(torch::kCPU, torch::kFloat64, false);
  const auto plain = run(device, dtype, false);
  const auto token_major = run(device, dtype, true);
  const char* names[] = {"out", "dq", "dk", "dv", "doffsets"};
  for (size_t t = 0; t < want.size(); ++t) {
    const std::string name = names[t];
    // d offsets sums over threads in an order that may vary on the CPU: not bit-equal there.
    if (name != "doffsets" || device.is_cuda()) {
      // Exact: the harness's check is error < bound, and any difference exceeds this bound.
      r.rel_l2(name + " token-major vs heads-first (exact)", token_major[t], plain[t],
               std::numeric_limits<double>::min());
    }
    if (name == "doffsets") {
      r.rel_l2(name, token_major[t], want[t], dtype == torch::kFloat64 ? 1e-9 : 1e-2);
    } else if (dtype == torch::kBFloat16) {
      r.bf16(name, token_major[t], want[t]);
    } else {
      r.rel_l2(name, token_major[t], want[t], dtype == torch::kFloat64 ? 1e-12 : 1e-5);
    }
  }
}

REACH_OP_CASES(dilated_attention_token_major_cases) {
  const auto fib = [] {
    const auto ints = pattern::integer_offsets({pattern::OffsetBase::fibonacci, 1.0, 21, 300});
    return std::vector<double>(ints.begin(), ints.end());
  }();
  const std::vector<double> frac{21.5, 34.0, 55.25, 89.75, 144.0, 233.5};
  struct Case {
    const char* shape;
    torch::Device device;
    torch::ScalarType dtype;
    const char* type;
    int64_t head_dim, kv_heads;
    bool fractional;
  };
  const Case cases[] = {
      {"b2_h4_n333_d32_W16_K5", torch::kCPU, torch::kFloat64, "f64", 32, 4, false},
      {"b2_h4_n333_d64_W16_K5", torch::kCUDA, torch::kBFloat16, "bf16", 64, 4, false},
      {"b2_h4_n333_d128_W16_K5", torch::kCUDA, torch::kBFloat16, "bf16", 128, 4, false},
      {"b2_hq4_hkv1_n333_d64_W16_K5_gqa", torch::kCUDA, torch::kBFloat16, "bf16", 64, 1, false},
      {"b2_h4_n333_d64_W16_K6_frac_doffsets", torch::kCUDA, torch::kBFloat16, "bf16", 64, 4, true},
      // CUDA-core backward (d = 128 with the offset gradient), float32, a padded head_dim:
      // the kernels take heads-first rows there, so the op copies.
      {"b2_h4_n333_d128_W16_K6_frac_doffsets", torch::kCUDA, torch::kBFloat16, "bf16", 128, 4,
       true},
      {"b2_h4_n333_d64_W16_K5", torch::kCUDA, torch::kFloat32, "f32", 64, 4, false},
      {"b2_h4_n333_d16_W16_K5_padded", torch::kCUDA, torch::kBFloat16, "bf16", 16, 4, false},
  };
  for (const auto& c : cases) {
    registry.add({"dilated_attention", c.device.is_cuda() ? "torch_cuda" : "torch", c.type,
                  std::string(c.shape) + "_token_major_out", "fwd_bwd", [c, fib, frac](Report& r) {
                    check_token_major_out(c.device, c.dtype, c.head_dim, c.kv_heads,
                                          c.fractional ? frac : fib, c.fractional, r);
                  }});
  }
}

TEST(DilatedAttentionOp, LearnedAlphaGradientKeepsAlphasDtypeAndShape) {
  torch::manual_seed(4);
  auto q = torch::randn({1, 1, 40, 8}), k = torch::randn({1, 1, 40, 8}),
       v = torch::randn({1, 1, 40, 8});
  for (const auto& alpha : {torch::tensor(1.3, torch::kFloat64).requires_grad_(),
                            torch::full({1}, 1.3f).requires_grad_()}) {
    dilated_attention_learned(q, k, v, alpha, pattern::OffsetBase::fibonacci, 4, 30)
        .sum()
        .backward();
    ASSERT_TRUE(alpha.grad().defined());
    EXPECT_EQ(alpha.grad().scalar_type(), alpha.scalar_type());
    EXPECT_EQ(alpha.grad().sizes(), alpha.sizes());
    EXPECT_TRUE(std::isfinite(alpha.grad().sum().item<double>()));
  }
}

TEST(DilatedAttentionOp, RegisteredTorchLibraryOpMatchesCppApi) {
  torch::manual_seed(2);
  auto q = torch::randn({1, 2, 50, 16}), k = torch::randn({1, 2, 50, 16}),
       v = torch::randn({1, 2, 50, 16});
  auto offsets = torch::tensor({8.0, 13.0, 21.0}, torch::kFloat64);
  auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("reach::dilated_attention", "")
          .typed<torch::Tensor(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                               int64_t, const torch::Tensor&, c10::optional<double>)>();
  auto via_dispatcher = op.call(q, k, v, 8, offsets, c10::nullopt);
  auto direct = dilated_attention(q, k, v, 8, offsets);
  EXPECT_TRUE(torch::equal(via_dispatcher, direct));
}

// The offsets op (for Python callers) gives pattern/'s offsets, and pattern/'s errors.
TEST(DilatedOffsetsOp, GivesPatternsOffsetsAndErrors) {
  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("reach::dilated_offsets", "")
                .typed<torch::Tensor(c10::string_view, double, int64_t, int64_t)>();
  const auto got = op.call("fibonacci", 1.3, 16, 190);
  const auto want = pattern::integer_offsets({pattern::OffsetBase::fibonacci, 1.3, 16, 190});
  EXPECT_EQ(got.scalar_type(), torch::kFloat64);
  EXPECT_EQ(host_values(got), std::vector<double>(want.begin(), want.end()));
  try {
    op.call("fibonacci", 1.0, 64, 8);
    ADD_FAILURE() << "expected an error for reach < window";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("dilated_offsets: "), std::string::npos) << e.what();
  }
}

TEST(DilatedAttentionOp, BadInputGivesClearErrors) {
  auto q = torch::randn({1, 2, 16, 8});
  auto offsets = torch::tensor({4.0, 6.0}, torch::kFloat64);
  auto expect_error = [](const std::function<void()>& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([&] { dilated_attention(q[0], q[0], q[0], 4, offsets); }, "rank 4");
  expect_error([&] { dilated_attention(q, q.narrow(2, 0, 8), q, 4, offsets); },
               "must be [batch, kv_heads, n, head_dim]");
  // Grouped-query attention needs kv_heads dividing the query heads (3 of 4 does not).
  expect_error(
      [&] {
        dilated_attention(torch::randn({1, 4, 16, 8}), torch::randn({1, 3, 16, 8}),
                          torch::randn({1, 3, 16, 8}), 4, offsets);
      },
      "kv_heads dividing q's heads");
  expect_error(
      [&] {
        auto h = q.to(torch::kHalf);
        dilated_attention(h, h, h, 4, offsets);
      },
      "float32 or float64");
  expect_error([&] { dilated_attention(q, q.to(torch::kFloat64), q, 4, offsets); },
               "share one dtype");
  expect_error([&] { dilated_attention(q, q.to(torch::kMeta), q, 4, offsets); }, "one device");
  expect_error([&] { dilated_attention(q, q, q, 0, offsets); }, "window W must be >= 1");
  expect_error([&] { dilated_attention(q, q, q, 5, offsets); }, "inside the window");
  expect_error(
      [&] {
        dilated_attention(q, q, q, 4, torch::tensor({6.0, 4.0}, torch::kFloat64));
      },
      "strictly increasing");
  expect_error([&] { dilated_attention(q, q, q, 4, offsets, -1.0); }, "scale");
  expect_error(
      [&] {
        dilated_attention_learned(q, q, q, torch::tensor(-0.5), pattern::OffsetBase::fibonacci, 4,
                                  16);
      },
      "alpha must be a positive");
  expect_error(
      [&] {
        dilated_attention_learned(q, q, q, torch::tensor(2, torch::kInt64),
                                  pattern::OffsetBase::fibonacci, 4, 16);
      },
      "alpha must be floating point");
  expect_error(
      [&] {
        dilated_attention_learned(q, q, q, torch::ones({2}), pattern::OffsetBase::fibonacci, 4, 16);
      },
      "single-element");
  for (const double bad : {-1.0, 0.0, std::nan("")}) {  // a host value handed in is checked too
    expect_error(
        [&] {
          dilated_attention_learned(q, q, q, torch::tensor(1.5), pattern::OffsetBase::fibonacci, 4,
                                    16, bad);
        },
        "alpha must be a positive");
  }
  expect_error([&] { dilated_attention(q, q, q, 4, torch::ones({2, 2}, torch::kFloat64)); }, "1-D");
}

}  // namespace
}  // namespace reach::harness
