// The entmax attention torch op: SSMax (softmax with log-n scaling) against a dense torch
// autograd composite (explicit mask, forward and every gradient), NAPE's ALiBi slopes, the
// entmax alpha, beta and gamma gradients through the op by finite differences, the registered
// op, and errors. The kernel itself is tested against the float64 reference in tests/kernels.
// Op harness cases: tests/kernels/harness.hpp.
//
// Tolerances: float64 throughout; the op and the composite differ only in summation
// order (max |got - want| <= 1e-10). Finite differences: central, step 1e-6 (1e-6 relative +
// absolute, harness.hpp).
#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ops/entmax_attention.hpp"
#include "tests/ops/torch_harness.hpp"
#ifdef REACH_TORCH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace reach::harness {
namespace {

using ops::entmax_attention;

const auto kF64 = torch::TensorOptions().dtype(torch::kFloat64);

// Dense SSMax attention, c = delta + beta * log(n_visible + 1)^gamma per head.
torch::Tensor composite_ssmax(const torch::Tensor& q, const torch::Tensor& k,
                              const torch::Tensor& v, int64_t window,
                              const std::vector<int64_t>& offsets, const torch::Tensor& delta,
                              const torch::Tensor& beta, const torch::Tensor& gamma,
                              const torch::Tensor& alibi = torch::Tensor()) {
  const int64_t n = q.size(2);
  auto i = torch::arange(n, torch::kLong).unsqueeze(1);
  auto j = torch::arange(n, torch::kLong).unsqueeze(0);
  auto dist = i - j;
  auto mask = (dist >= 0) & (dist < window);
  for (int64_t d : offsets) mask = mask | (dist == d);
  auto log_n = torch::log(mask.sum(1).to(torch::kFloat64) + 1).view({1, 1, n, 1});
  auto c = delta.view({1, -1, 1, 1}) +
           beta.view({1, -1, 1, 1}) * torch::pow(log_n, gamma.view({1, -1, 1, 1}));
  auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(q.size(3))) * c;
  if (alibi.defined()) scores = scores - alibi.view({1, -1, 1, 1}) * dist.to(torch::kFloat64);
  scores = scores.masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity());
  return torch::matmul(torch::softmax(scores, -1), v);
}

void check_ssmax_against_composite(Report& r) {
  torch::manual_seed(1);
  const int64_t window = 3;
  const std::vector<int64_t> offs = {5, 8, 13};
  auto make = [](torch::IntArrayRef shape) { return torch::randn(shape, kF64).requires_grad_(); };
  auto q = make({2, 2, 20, 4}), k = make({2, 2, 20, 4}), v = make({2, 2, 20, 4});
  auto delta = torch::tensor({0.3, 0.5}, kF64).requires_grad_();
  auto beta = torch::tensor({0.7, 1.2}, kF64).requires_grad_();
  auto gamma = torch::tensor({1.3, 0.6}, kF64).requires_grad_();
  const auto offsets = torch::tensor({5.0, 8.0, 13.0}, kF64);
  const auto w = torch::randn({2, 2, 20, 4}, kF64);
  auto out = entmax_attention(q, k, v, window, offsets, c10::nullopt, delta, beta, gamma, true);
  (out * w).sum().backward();
  std::vector<torch::Tensor> ours = {q.grad(),     k.grad(),    v.grad(),
                                     delta.grad(), beta.grad(), gamma.grad()};
  for (auto* t : {&q, &k, &v, &delta, &beta, &gamma}) t->mutable_grad() = torch::Tensor();
  auto expected = composite_ssmax(q, k, v, window, offs, delta, beta, gamma);
  (expected * w).sum().backward();
  r.max_diff("out", host_values(out), host_values(expected), 1e-10);
  std::vector<torch::Tensor> theirs = {q.grad(),     k.grad(),    v.grad(),
                                       delta.grad(), beta.grad(), gamma.grad()};
  const char* names[] = {"dq", "dk", "dv", "ddelta", "dbeta", "dgamma"};
  for (size_t t = 0; t < ours.size(); ++t) {
    r.max_diff(names[t], host_values(ours[t]), host_values(theirs[t]), 1e-10);
  }
}

// NAPE through the op: head 0 NoPE, head 1 ALiBi; the bias is added after the multiplier.
void check_alibi_against_composite(Report& r) {
  torch::manual_seed(3);
  auto make = [](torch::IntArrayRef shape) { return torch::randn(shape, kF64).requires_grad_(); };
  auto q = make({1, 2, 17, 4}), k = make({1, 2, 17, 4}), v = make({1, 2, 17, 4});
  auto delta = torch::tensor({0.2, 0.4}, kF64), beta = torch::tensor({0.9, 0.6}, kF64),
       gamma = torch::tensor({1.0, 1.0}, kF64);
  const auto alibi = torch::tensor({0.0, 0.35}, kF64);
  const auto w = torch::randn({1, 2, 17, 4}, kF64);
  auto out = entmax_attention(q, k, v, 1000, torch::empty({0}, kF64), c10::nullopt, delta, beta,
                              gamma, true, c10::nullopt, alibi);
  (out * w).sum().backward();
  const auto dq = q.grad().clone(), dk = k.grad().clone();
  q.mutable_grad() = torch::Tensor();
  k.mutable_grad() = torch::Tensor();
  auto expected = composite_ssmax(q, k, v, 1000, {}, delta, beta, gamma, alibi);
  (expected * w).sum().backward();
  r.max_diff("out", host_values(out), host_values(expected), 1e-10);
  r.max_diff("dq", host_values(dq), host_values(q.grad()), 1e-10);
  r.max_diff("dk", host_values(dk), host_values(k.grad()), 1e-10);
}

void check_parameter_gradients(Report& r) {
  torch::manual_seed(2);
  const auto q = torch::randn({1, 2, 16, 4}, kF64) * 1.5, k = torch::randn({1, 2, 16, 4}, kF64),
             v = torch::randn({1, 2, 16, 4}, kF64), w = torch::randn({1, 2, 16, 4}, kF64);
  const auto offsets = torch::tensor({4.0, 7.0, 11.0}, kF64);
  auto alpha = torch::tensor({1.3, 1.6}, kF64).requires_grad_();
  auto delta = torch::tensor({0.8, 1.0}, kF64).requires_grad_();
  // Per-query beta and gamma, [batch, heads, n].
  auto beta = (torch::rand({1, 2, 16}, kF64) + 0.1).requires_grad_();
  auto gamma = (torch::rand({1, 2, 16}, kF64) * 2 - 1).requires_grad_();
  auto loss = [&] {
    return (entmax_attention(q, k, v, 3, offsets, alpha, delta, beta, gamma) * w).sum();
  };
  loss().backward();
  auto loss_value = [&] { return loss().item<double>(); };
  for (auto [p, name] : {std::pair{&alpha, "dalpha"}, std::pair{&delta, "ddelta"},
                         std::pair{&beta, "dbeta"}, std::pair{&gamma, "dgamma"}}) {
    const auto analytic = p->grad().clone();
    r.fd(name, finite_difference_error(*p, analytic, loss_value), 1e-6);
  }
}

REACH_OP_CASES(entmax_attention_op_cases) {
  registry.add({"entmax_attention", "torch", "f64", "b2_h2_n20_d4_W3_K3_ssmax", "fwd_bwd",
                check_ssmax_against_composite});
  registry.add({"entmax_attention", "torch", "f64", "b1_h2_n17_d4_dense_ssmax_alibi", "fwd_bwd",
                check_alibi_against_composite});
  registry.add({"entmax_attention", "torch", "f64", "b1_h2_n16_d4_W3_K3_perquery", "fd_params",
                check_parameter_gradients});
}

// Bad ALiBi slopes: a wrong shape, and slopes that ask for a gradient (they are fixed: an
// error, not a silently dropped gradient).
TEST(EntmaxAttentionOp, BadAlibiSlopesAreErrors) {
  auto q = torch::randn({1, 2, 17, 4}, kF64);
  auto delta = torch::tensor({0.2, 0.4}, kF64), beta = torch::tensor({0.9, 0.6}, kF64),
       gamma = torch::tensor({1.0, 1.0}, kF64);
  EXPECT_THROW(
      entmax_attention(q, q, q, 4, torch::empty({0}, kF64), torch::tensor({1.5, 1.5}, kF64),
                       c10::nullopt, c10::nullopt, c10::nullopt, false, c10::nullopt,
                       torch::tensor({0.1, 0.2, 0.3}, kF64)),
      c10::Error);
  EXPECT_THROW(
      entmax_attention(q, q, q, 4, torch::empty({0}, kF64), c10::nullopt, delta, beta, gamma, true,
                       c10::nullopt, torch::tensor({0.0, 0.35}, kF64).requires_grad_()),
      c10::Error);
}

TEST(EntmaxAttentionOp, RegisteredOpRuns) {
  auto op = c10::Dispatcher::singleton().findSchemaOrThrow("reach::entmax_attention", "");
  EXPECT_EQ(op.schema().arguments().size(), 12u);
  const auto q = torch::randn({1, 2, 8, 4});
  const auto out =
      op.typed<torch::Tensor(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                             int64_t, const torch::Tensor&, const c10::optional<torch::Tensor>&,
                             const c10::optional<torch::Tensor>&,
                             const c10::optional<torch::Tensor>&,
                             const c10::optional<torch::Tensor>&, bool, c10::optional<double>,
                             const c10::optional<torch::Tensor>&)>()
          .call(q, q, q, 8, torch::empty({0}, kF64), torch::tensor({1.5, 2.0}), c10::nullopt,
                c10::nullopt, c10::nullopt, false, c10::nullopt, torch::tensor({0.0, 0.5}, kF64));
  EXPECT_EQ(out.sizes(), q.sizes());
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
}

void expect_error(const std::function<void()>& f, const std::string& fragment) {
  try {
    f();
    FAIL() << "expected an error containing '" << fragment << "'";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(EntmaxAttentionOp, BadInputsGetClearErrors) {
  const auto q = torch::randn({1, 2, 8, 4});
  const auto none = torch::empty({0}, kF64);
  expect_error(
      [&] {
        entmax_attention(q, q, q, 2, none, torch::tensor({1.5, 2.5}));
      },
      "alpha of head 1 must be in (1, 2]");
  expect_error([&] { entmax_attention(q, q, q, 2, none, torch::tensor({1.5})); },
               "alpha must have shape [heads]");
  expect_error([&] { entmax_attention(q, q, q, 2, none, c10::nullopt); },
               "alpha is required unless softmax=True");
  expect_error(
      [&] {
        entmax_attention(q, q, q, 2, none, torch::tensor({2, 2}));
      },
      "alpha must be a floating-point tensor, got Long");
  expect_error(
      [&] {
        entmax_attention(q, q, q, 2, none, torch::tensor({1.5, 1.5}), torch::ones({2}));
      },
      "give all of delta, beta, gamma");
  auto nan_q = q.clone();
  nan_q[0][0][3][1] = std::nan("");
  expect_error(
      [&] {
        entmax_attention(nan_q, q, q, 2, none, torch::tensor({1.5, 1.5}));
      },
      "input q contains NaN");
  expect_error(
      [&] {
        entmax_attention(q, q, q, 2, torch::tensor({2.5}), torch::tensor({1.5, 1.5}));
      },
      "fractional");
  expect_error(
      [&] {
        entmax_attention(q.view({2, 8, 4}), q, q, 2, none, torch::tensor({1.5}));
      },
      "rank 4");
}

// The op on CUDA (float32 and bf16) against the op on the CPU in float64 on the same inputs,
// through autograd: outputs, dq, dk, dv, and the per-head (or per-query) gradients of alpha,
// delta, beta, gamma that the op sums from the kernels' per-row values. Dense causal (tiled
// kernels) and window + offsets (row kernels), NAPE slopes on half of the heads. Bounds:
// float32 1e-4 relative L2 (tensors) and 1e-3 (parameters, sums of n float32 row sums); bf16:
// twice what rounding the float64 result to bf16 costs plus 1e-4 (harness::Bf16Rule), and
// 1e-3 for the parameters (nothing on their path is rounded to bf16). The kernels' own cases
// (every normaliser, n up to 70,000): tests/kernels/entmax_attention_cuda_test.cpp.
TEST(EntmaxAttentionOpCuda, MatchesTheCpuOpInFloat64) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(11);
  const int64_t B = 2, H = 4, n = 300, d = 64;
  const auto alibi = torch::tensor({0.0, 0.0, 0.25, 0.0625}, kF64);
  for (const bool bf16 : {false, true}) {
    for (const bool dense : {true, false}) {
      for (const bool per_query : {false, true}) {
        SCOPED_TRACE(std::string(bf16 ? "bf16" : "f32") + (dense ? " dense" : " fibonacci") +
                     (per_query ? " per-query" : " per-head"));
        const auto dtype = bf16 ? torch::kBFloat16 : torch::kFloat32;
        auto draw = [&](torch::IntArrayRef shape) {
          return torch::randn(shape, kF64).to(dtype).to(torch::kFloat64);  // same inputs both
        };
        const auto q = draw({B, H, n, d}), k = draw({B, H, n, d}), v = draw({B, H, n, d}),
                   w = draw({B, H, n, d});
        const auto alpha = torch::tensor({1.5, 1.3, 2.0, 1.7}, kF64);
        const auto delta = torch::rand({H}, kF64) * 0.5 + 0.5;
        const auto beta = per_query ? torch::rand({B, H, n}, kF64) * 0.5 + 0.1
                                    : torch::rand({H}, kF64) * 0.5 + 0.1;
        const auto gamma =
            per_query ? torch::rand({B, H, n}, kF64) * 2 - 0.5 : torch::rand({H}, kF64) * 2 - 0.5;
        const int64_t window = dense ? n : 16;
        const auto offsets =
            dense ? torch::empty({0}, kF64)
                  : torch::tensor({16.0, 21.0, 34.0, 55.0, 89.0, 144.0, 233.0}, kF64);
        std::vector<std::vector<double>> results[2];
        for (const bool cuda : {false, true}) {
          const auto device = cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
          const auto type = cuda ? dtype : torch::kFloat64;
          auto leaf = [&](const torch::Tensor& t) {
            return t.to(device, type).detach().requires_grad_();
          };
          auto param = [&](const torch::Tensor& t) {
            return t.to(device, torch::kFloat64).detach().requires_grad_();
          };
          auto qq = leaf(q), kk = leaf(k), vv = leaf(v);
          auto a = param(alpha), dl = param(delta), bt = param(beta), gm = param(gamma);
          const auto out = entmax_attention(qq, kk, vv, window, offsets, a, dl, bt, gm, false,
                                            c10::nullopt, alibi);
          (out.to(torch::kFloat64) * w.to(device)).sum().backward();
          for (const auto& t :
               {out, qq.grad(), kk.grad(), vv.grad(), a.grad(), dl.grad(), bt.grad(), gm.grad()}) {
            results[cuda].push_back(host_values(t));
          }
        }
        const char* names[] = {"out", "dq", "dk", "dv", "dalpha", "ddelta", "dbeta", "dgamma"};
        const Bf16Rule rule;
        for (size_t t = 0; t < 8; ++t) {
          const auto& want = results[0][t];
          const double bound = t >= 4 ? 1e-3 : (bf16 ? rule.bound(want) : 1e-4);
          EXPECT_LT(rel_l2_error(results[1][t], want), bound) << names[t];
        }
      }
    }
  }
}

TEST(EntmaxAttentionOpCuda, UnsupportedShapesGetClearErrors) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const auto opts = torch::TensorOptions().device(torch::kCUDA);
  const auto alpha = torch::tensor({1.5}, kF64);
  const auto q = torch::randn({1, 1, 8, 4}, opts);
  expect_error(
      [&] { entmax_attention(q.to(torch::kFloat64), q, q, 8, torch::empty({0}, kF64), alpha); },
      "must share one dtype");
  expect_error(
      [&] {
        entmax_attention(q.to(torch::kFloat64), q.to(torch::kFloat64), q.to(torch::kFloat64), 8,
                         torch::empty({0}, kF64), alpha);
      },
      "float32 or bfloat16 on CUDA");
  const auto wide = torch::randn({1, 1, 8, 256}, opts);
  expect_error([&] { entmax_attention(wide, wide, wide, 8, torch::empty({0}, kF64), alpha); },
               "head_dim must be in 1..128 on CUDA");
  const auto long_q = torch::randn({1, 1, 3000, 4}, opts);
  expect_error(
      [&] {
        entmax_attention(long_q, long_q, long_q, 2000, torch::tensor({2000.0, 2001.0}, kF64),
                         alpha);
      },
      "must be <= 1024 on CUDA");
}

#ifdef REACH_TORCH_CUDA
// Sync debug mode "error" for one scope: any copy or wait that makes the host wait for the GPU
// inside LibTorch throws.
struct NoHostWaits {
  NoHostWaits() {
    c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_ERROR);
  }
  ~NoHostWaits() {
    c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_DISABLED);
  }
  NoHostWaits(const NoHostWaits&) = delete;
  NoHostWaits& operator=(const NoHostWaits&) = delete;
};

// Parameters that live on the GPU (a learned alpha, ASEntmax's delta/beta/gamma, slopes the
// model copied there) are not read back: forward and backward make the host wait for nothing
// (sync debug mode "error"). Their values are then checked on the device: an invalid one
// (alpha outside (1, 2], a non-finite beta, a negative slope) makes that head's output NaN,
// and the other heads stay as they were.
TEST(EntmaxAttentionOpCuda, GpuParametersAreNotReadBackAndBadOnesShowAsNaN) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(5);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const int64_t B = 1, H = 4, n = 200, d = 64;
  const auto offsets = torch::tensor({16.0, 21.0, 34.0, 55.0, 89.0}, kF64);
  const auto good_alpha = torch::tensor({1.5, 1.3, 2.0, 1.7}, cuda.dtype(torch::kFloat64));
  const auto delta = torch::full({H}, 0.9, cuda.dtype(torch::kFloat64)).requires_grad_();
  const auto beta = torch::full({H}, 0.2, cuda.dtype(torch::kFloat64)).requires_grad_();
  const auto gamma = torch::full({H}, 1.1, cuda.dtype(torch::kFloat64)).requires_grad_();
  const auto slopes = torch::tensor({0.0, 0.0, 0.25, 0.0625}, cuda.dtype(torch::kFloat64));
  // float32 dense (tiled kernels), float32 window + offsets (rows), bf16 dense (tensor cores).
  for (const auto& [dtype, window] :
       {std::pair{torch::kFloat32, n}, std::pair{torch::kFloat32, int64_t{16}},
        std::pair{torch::kBFloat16, n}}) {
    SCOPED_TRACE(std::string(dtype == torch::kBFloat16 ? "bf16 " : "f32 ") +
                 (window == n ? "dense" : "window + offsets"));
    const auto q = torch::randn({B, H, n, d}, cuda.dtype(dtype)).requires_grad_();
    const auto k = torch::randn({B, H, n, d}, cuda.dtype(dtype)).requires_grad_();
    const auto v = torch::randn({B, H, n, d}, cuda.dtype(dtype)).requires_grad_();
    const auto keys = window == n ? torch::empty({0}, kF64) : offsets;
    torch::Tensor out;
    {
      const NoHostWaits no_waits;
      const auto alpha = good_alpha.clone().requires_grad_();
      out = entmax_attention(q, k, v, window, keys, alpha, delta, beta, gamma, false, c10::nullopt,
                             slopes);
      out.sum().backward();
    }
    EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
    EXPECT_TRUE(torch::isfinite(q.grad()).all().item<bool>());
    // The same values from the host (validated there, then copied) give the same output.
    const auto host_out =
        entmax_attention(q, k, v, window, keys, good_alpha.cpu(), delta.cpu(), beta.cpu(),
                         gamma.cpu(), false, c10::nullopt, slopes.cpu());
    EXPECT_TRUE(torch::equal(out, host_out));
    auto nan_heads = [&](const torch::Tensor& result) {
      return torch::isnan(result).any(/*dim=*/3).all(/*dim=*/2).squeeze(0).cpu();
    };
    // Bad values, one parameter at a time, on head 1 (alpha, beta) or head 2 (slope).
    auto bad_alpha = good_alpha.clone();
    bad_alpha[1] = 2.5;
    auto bad_beta = beta.detach().clone();
    bad_beta[1] = std::numeric_limits<double>::infinity();
    auto bad_slopes = slopes.clone();
    bad_slopes[2] = -0.5;
    const auto got_alpha = entmax_attention(q, k, v, window, keys, bad_alpha, delta, beta, gamma,
                                            false, c10::nullopt, slopes);
    const auto got_beta = entmax_attention(q, k, v, window, keys, good_alpha, delta, bad_beta,
                                           gamma, false, c10::nullopt, slopes);
    const auto got_slope = entmax_attention(q, k, v, window, keys, good_alpha, delta, beta, gamma,
                                            false, c10::nullopt, bad_slopes);
    const auto head1 = torch::tensor({false, true, false, false});
    const auto head2 = torch::tensor({false, false, true, false});
    EXPECT_TRUE(torch::equal(nan_heads(got_alpha), head1)) << nan_heads(got_alpha);
    EXPECT_TRUE(torch::equal(nan_heads(got_beta), head1)) << nan_heads(got_beta);
    EXPECT_TRUE(torch::equal(nan_heads(got_slope), head2)) << nan_heads(got_slope);
    // On the host the same bad values are errors naming the parameter.
    expect_error(
        [&] {
          entmax_attention(q, k, v, window, keys, bad_alpha.cpu(), delta, beta, gamma, false,
                           c10::nullopt, slopes);
        },
        "alpha of head 1 must be in (1, 2]");
  }
  // A parameter on another device than q (CPU q, CUDA alpha) is an error, not a crash.
  const auto cpu_q = torch::randn({1, H, 8, 4});
  expect_error(
      [&] { entmax_attention(cpu_q, cpu_q, cpu_q, 8, torch::empty({0}, kF64), good_alpha); },
      "alpha is on cuda:0, q on cpu");
}
#endif

}  // namespace
}  // namespace reach::harness
