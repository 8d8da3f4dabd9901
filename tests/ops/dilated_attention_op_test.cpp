// The torch op against an independent float64 dense reference built with torch autograd
// (explicit boolean mask over window + offset diagonals), the learned-alpha gradient by
// finite differences, the registered TORCH_LIBRARY op, and the errors for bad input.
#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "ops/dilated_attention.hpp"

namespace reach::ops {
namespace {

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

double rel(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b).abs().max().item<double>() / b.abs().max().item<double>();
}

TEST(DilatedAttentionOp, MatchesMaskedReferenceForwardAndBackward) {
  torch::manual_seed(0);
  struct Shape {
    int64_t b, h, n, d, w, reach;
  };
  for (auto s : {Shape{1, 1, 10, 16, 64, 64}, Shape{2, 3, 77, 32, 8, 60},
                 Shape{1, 2, 200, 64, 16, 190}, Shape{2, 1, 129, 128, 4, 100}}) {
    const auto offsets =
        pattern::integer_offsets({pattern::OffsetBase::fibonacci, 1.3, s.w, s.reach});
    auto opts = torch::TensorOptions().dtype(torch::kFloat64);
    auto q = torch::randn({s.b, s.h, s.n, s.d}, opts).requires_grad_();
    auto k = torch::randn({s.b, s.h, s.n, s.d}, opts).requires_grad_();
    auto v = torch::randn({s.b, s.h, s.n, s.d}, opts).requires_grad_();
    auto g = torch::randn({s.b, s.h, s.n, s.d}, opts);
    auto want = masked_reference(q, k, v, s.w, offsets);
    auto ref_grads = torch::autograd::grad({want}, {q, k, v}, {g});

    for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
      const double tol = dtype == torch::kFloat64 ? 1e-10 : 1e-4;
      auto qc = q.detach().to(dtype).requires_grad_();
      auto kc = k.detach().to(dtype).requires_grad_();
      auto vc = v.detach().to(dtype).requires_grad_();
      auto got =
          dilated_attention_static(qc, kc, vc, {pattern::OffsetBase::fibonacci, 1.3, s.w, s.reach});
      EXPECT_LT(rel(got, want.detach()), tol) << "n=" << s.n;
      auto grads = torch::autograd::grad({got}, {qc, kc, vc}, {g.to(dtype)});
      for (int t = 0; t < 3; ++t) {
        EXPECT_LT(rel(grads[t], ref_grads[t]), tol * 10) << "grad " << t << " n=" << s.n;
      }
    }
  }
}

TEST(DilatedAttentionOp, LearnedAlphaGradientMatchesFiniteDifferences) {
  torch::manual_seed(1);
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  auto q = torch::randn({1, 2, 90, 16}, opts), k = torch::randn({1, 2, 90, 16}, opts),
       v = torch::randn({1, 2, 90, 16}, opts), g = torch::randn({1, 2, 90, 16}, opts);
  auto loss_at = [&](double a) {
    auto alpha = torch::tensor(a, opts);
    return (dilated_attention_learned(q, k, v, alpha, pattern::OffsetBase::fibonacci, 6, 80) * g)
        .sum()
        .item<double>();
  };
  for (double a0 : {1.37, 2.21, 3.05}) {
    auto alpha = torch::tensor(a0, opts).requires_grad_();
    (dilated_attention_learned(q, k, v, alpha, pattern::OffsetBase::fibonacci, 6, 80) * g)
        .sum()
        .backward();
    const double h = 1e-6;
    const double fd = (loss_at(a0 + h) - loss_at(a0 - h)) / (2 * h);
    EXPECT_NEAR(alpha.grad().item<double>(), fd, 1e-6 * std::max(1.0, std::abs(fd)))
        << "alpha=" << a0;
    EXPECT_NE(alpha.grad().item<double>(), 0.0);
    // Handing alpha's value in (as a model does, to spare a device read) changes nothing.
    auto alpha2 = torch::tensor(a0, opts).requires_grad_();
    const auto out =
        dilated_attention_learned(q, k, v, alpha2, pattern::OffsetBase::fibonacci, 6, 80, a0);
    (out * g).sum().backward();
    // (Not bit-equal: the CPU backward sums d offsets over threads in a varying order.)
    EXPECT_NEAR(alpha2.grad().item<double>(), alpha.grad().item<double>(),
                1e-9 * std::abs(alpha.grad().item<double>()));
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
  expect_error([&] { dilated_attention(q, q.narrow(2, 0, 8), q, 4, offsets); }, "same shape");
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
}  // namespace reach::ops
