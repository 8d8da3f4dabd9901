// The CPU kernel against the dense float64 reference (explicit mask), on random inputs.
//
// Tolerances: the float64 kernel differs from the reference only in summation order,
// so it must agree to 1e-10 relative. The float32 kernel accumulates in float32 over at
// most a few hundred terms of length <= 128: its error is a few hundred ulps of 2^-24 ~
// 6e-8 at worst, so 5e-5 relative (to the largest reference magnitude) is generous but
// still catches any indexing or masking mistake (those give O(1) errors).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "kernels/cpu/dilated_attention.hpp"
#include "kernels/cpu/reference_attention.hpp"

namespace reach::kernels {
namespace {

struct Case {
  int64_t bh, n, d, window;
  std::vector<double> offsets;
};

std::vector<double> random_vector(size_t size, std::mt19937_64& rng, double scale = 1.0) {
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<double> x(size);
  for (auto& e : x) e = normal(rng);
  return x;
}

DilatedAttentionParams params_of(const Case& c) {
  DilatedAttentionParams p;
  p.batch_heads = c.bh;
  p.seq_len = c.n;
  p.head_dim = c.d;
  p.window = c.window;
  p.offsets = c.offsets.data();
  p.num_offsets = static_cast<int64_t>(c.offsets.size());
  p.scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  return p;
}

double max_abs(const std::vector<double>& x) {
  double m = 0;
  for (double e : x) m = std::max(m, std::abs(e));
  return m;
}

template <typename T>
double relative_error(const std::vector<T>& got, const std::vector<double>& want) {
  double err = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::abs(static_cast<double>(got[i]) - want[i]));
  }
  return err / std::max(max_abs(want), 1e-300);
}

std::vector<Case> cases() {
  return {
      {1, 1, 16, 4, {}},                              // single token
      {2, 7, 16, 64, {}},                             // n smaller than W: dense causal
      {1, 50, 32, 8, {8, 13, 21, 34, 55, 89}},        // offsets beyond the sequence start
      {3, 97, 64, 5, {5, 9, 14, 23, 37}},             // n prime, batch*heads > 1
      {2, 130, 128, 16, {16.5, 26.4, 42.9, 69.3}},    // fractional (learned) offsets, d = 128
      {1, 64, 24, 3, {3.0, 4.25, 7.75, 12.0, 19.5}},  // mixed integer and fractional
      {4, 33, 48, 1, {1.5, 2.0, 3.5}},                // W = 1
  };
}

TEST(DilatedAttentionCpu, ForwardMatchesReferenceFloat64AndFloat32) {
  std::mt19937_64 rng(1234);
  for (const auto& c : cases()) {
    const auto p = params_of(c);
    const size_t size = static_cast<size_t>(c.bh * c.n * c.d);
    const auto q = random_vector(size, rng), k = random_vector(size, rng),
               v = random_vector(size, rng);
    const auto want = reference::forward(p, q, k, v);

    std::vector<double> out(size, NAN), lse(static_cast<size_t>(c.bh * c.n), NAN);
    dilated_attention_forward_cpu<double>(p, q.data(), k.data(), v.data(), out.data(), lse.data());
    EXPECT_LT(relative_error(out, want), 1e-10) << "n=" << c.n << " d=" << c.d;

    std::vector<float> qf(q.begin(), q.end()), kf(k.begin(), k.end()), vf(v.begin(), v.end());
    std::vector<float> outf(size, NAN), lsef(static_cast<size_t>(c.bh * c.n), NAN);
    dilated_attention_forward_cpu<float>(p, qf.data(), kf.data(), vf.data(), outf.data(),
                                         lsef.data());
    EXPECT_LT(relative_error(outf, want), 5e-5) << "n=" << c.n << " d=" << c.d;
  }
}

TEST(DilatedAttentionCpu, BackwardMatchesReference) {
  std::mt19937_64 rng(99);
  for (const auto& c : cases()) {
    const auto p = params_of(c);
    const size_t size = static_cast<size_t>(c.bh * c.n * c.d);
    const auto q = random_vector(size, rng), k = random_vector(size, rng),
               v = random_vector(size, rng), go = random_vector(size, rng);
    const auto want = reference::backward(p, q, k, v, go);

    std::vector<double> out(size), lse(static_cast<size_t>(c.bh * c.n));
    dilated_attention_forward_cpu<double>(p, q.data(), k.data(), v.data(), out.data(), lse.data());
    std::vector<double> dq(size, NAN), dk(size, NAN), dv(size, NAN), doff(c.offsets.size(), NAN);
    dilated_attention_backward_cpu<double>(p, q.data(), k.data(), v.data(), out.data(), lse.data(),
                                           go.data(), dq.data(), dk.data(), dv.data(), doff.data());
    EXPECT_LT(relative_error(dq, want.q), 1e-10) << "dq n=" << c.n;
    EXPECT_LT(relative_error(dk, want.k), 1e-10) << "dk n=" << c.n;
    EXPECT_LT(relative_error(dv, want.v), 1e-10) << "dv n=" << c.n;
    if (!c.offsets.empty()) {
      EXPECT_LT(relative_error(doff, want.offsets), 1e-9) << "doffsets n=" << c.n;
    }

    std::vector<float> qf(q.begin(), q.end()), kf(k.begin(), k.end()), vf(v.begin(), v.end()),
        gof(go.begin(), go.end()), outf(size), lsef(static_cast<size_t>(c.bh * c.n));
    dilated_attention_forward_cpu<float>(p, qf.data(), kf.data(), vf.data(), outf.data(),
                                         lsef.data());
    std::vector<float> dqf(size, NAN), dkf(size, NAN), dvf(size, NAN);
    dilated_attention_backward_cpu<float>(p, qf.data(), kf.data(), vf.data(), outf.data(),
                                          lsef.data(), gof.data(), dqf.data(), dkf.data(),
                                          dvf.data(), nullptr);
    EXPECT_LT(relative_error(dqf, want.q), 1e-4) << "dq float n=" << c.n;
    EXPECT_LT(relative_error(dkf, want.k), 1e-4) << "dk float n=" << c.n;
    EXPECT_LT(relative_error(dvf, want.v), 1e-4) << "dv float n=" << c.n;
  }
}

// Central differences on loss = sum(out * G) in float64, for q, k, v and the offsets.
TEST(DilatedAttentionCpu, GradientsMatchFiniteDifferences) {
  std::mt19937_64 rng(7);
  Case c{2, 40, 16, 4, {4.3, 6.9, 11.2, 18.1, 29.3}};
  auto p = params_of(c);
  const size_t size = static_cast<size_t>(c.bh * c.n * c.d);
  auto q = random_vector(size, rng), k = random_vector(size, rng), v = random_vector(size, rng);
  const auto g = random_vector(size, rng);
  std::vector<double> out(size), lse(static_cast<size_t>(c.bh * c.n));
  auto loss = [&]() {
    dilated_attention_forward_cpu<double>(p, q.data(), k.data(), v.data(), out.data(), lse.data());
    double l = 0;
    for (size_t i = 0; i < size; ++i) l += out[i] * g[i];
    return l;
  };
  loss();
  std::vector<double> dq(size), dk(size), dv(size), doff(c.offsets.size());
  dilated_attention_backward_cpu<double>(p, q.data(), k.data(), v.data(), out.data(), lse.data(),
                                         g.data(), dq.data(), dk.data(), dv.data(), doff.data());
  const double h = 1e-6;
  std::uniform_int_distribution<size_t> pick(0, size - 1);
  for (auto [x, grad] : {std::pair{&q, &dq}, std::pair{&k, &dk}, std::pair{&v, &dv}}) {
    for (int trial = 0; trial < 25; ++trial) {
      const size_t i = pick(rng);
      const double saved = (*x)[i];
      (*x)[i] = saved + h;
      const double up = loss();
      (*x)[i] = saved - h;
      const double down = loss();
      (*x)[i] = saved;
      EXPECT_NEAR((*grad)[i], (up - down) / (2 * h), 1e-6 * std::max(1.0, std::abs((*grad)[i])));
    }
  }
  for (size_t kk = 0; kk < c.offsets.size(); ++kk) {
    const double saved = c.offsets[kk];
    c.offsets[kk] = saved + h;
    const double up = loss();
    c.offsets[kk] = saved - h;
    const double down = loss();
    c.offsets[kk] = saved;
    EXPECT_NEAR(doff[kk], (up - down) / (2 * h), 1e-6 * std::max(1.0, std::abs(doff[kk])))
        << "offset " << kk;
  }
}

TEST(DilatedAttentionCpu, RejectsInvalidParams) {
  std::vector<double> buf(64, 0.5), out(64), lse(4);
  std::vector<double> inside_window{2.0}, unsorted{9.0, 8.0}, nonfinite{INFINITY};
  auto run = [&](DilatedAttentionParams p) {
    dilated_attention_forward_cpu<double>(p, buf.data(), buf.data(), buf.data(), out.data(),
                                          lse.data());
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
  bad.num_offsets = 3;  // null pointer
  EXPECT_THROW(run(bad), std::invalid_argument);
}

}  // namespace
}  // namespace reach::kernels
