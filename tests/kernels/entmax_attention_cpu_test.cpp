// alpha-entmax attention (CPU kernel) against the dense float64 reference built from
// the definition, the closed forms at a = 2 (sparsemax) and a -> 1 (softmax), and
// finite differences for every gradient, on random inputs (op harness cases, harness.hpp).
//
// Tolerances: the float64 kernel finds tau by bisection to machine precision and the
// reference by 400 long-double bisection steps, so they agree to rounding amplified by
// the power 1/(a-1) <= 4 here: 1e-10 (max |got - want| / max |want|) is generous yet far below
// any indexing or masking error (those are O(1e-2) or more). float32 inputs are read into
// float64 accumulators and rounded once on output, checked against the reference on the
// float-rounded inputs: 1e-5. Finite differences use central steps of 1e-6 (truncation ~1e-12,
// rounding ~1e-10): 1e-6 relative + absolute (harness.hpp), over every element.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <random>

#include "kernels/cpu/entmax_attention.hpp"
#include "kernels/cpu/reference_entmax_attention.hpp"
#include "tests/kernels/harness.hpp"

namespace reach::harness {
namespace {

using kernels::entmax_attention_backward_cpu;
using kernels::entmax_attention_forward_cpu;
using kernels::entmax_normalise_row;
using kernels::EntmaxAttentionParams;

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

std::vector<double> random_vector(size_t size, std::mt19937_64& rng, double scale = 1.0) {
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<double> x(size);
  for (auto& e : x) e = normal(rng);
  return x;
}

// One problem: shapes, key set, head parameters and inputs.
struct Problem {
  int64_t bh = 0, n = 0, d = 0, window = 1, heads = 1;
  std::vector<double> offsets, alpha, delta, beta, gamma;
  std::vector<double> alibi;  // per-head ALiBi slopes; empty: none
  bool softmax = false, log_n_scaling = false, per_query_scale = false;
  std::vector<double> q, k, v;
  std::string variant = "entmax";  // names the case

  EntmaxAttentionParams params() const {
    EntmaxAttentionParams p;
    p.base.batch_heads = bh;
    p.base.seq_len = n;
    p.base.head_dim = d;
    p.base.window = window;
    p.base.offsets = offsets.data();
    p.base.num_offsets = static_cast<int64_t>(offsets.size());
    p.base.scale = 1.0 / std::sqrt(static_cast<double>(d));
    p.num_heads = heads;
    p.alpha = alpha.data();
    p.softmax = softmax;
    p.log_n_scaling = log_n_scaling;
    p.per_query_scale = per_query_scale;
    p.delta = delta.data();
    p.beta = beta.data();
    p.gamma = gamma.data();
    p.alibi_slopes = alibi.empty() ? nullptr : alibi.data();
    return p;
  }
  void randomise(uint64_t seed, double qk_scale) {
    Rng rng(seed);
    const auto size = static_cast<size_t>(bh * n * d);
    q = rng.normal(size, qk_scale);
    k = rng.normal(size, qk_scale);
    v = rng.normal(size);
  }
  std::string shape() const {
    return shape_part("bh", double(bh)) + "_" + shape_part("n", double(n)) + "_" +
           shape_part("d", double(d)) + "_" + shape_part("W", double(window)) + "_" +
           shape_part("K", double(offsets.size())) + "_" + variant + (log_n_scaling ? "_logn" : "");
  }
};

Problem make_problem(int64_t n, int64_t window, std::vector<double> offsets, bool scaling,
                     uint64_t seed) {
  Problem pr;
  pr.bh = 2 * 2;
  pr.n = n;
  pr.d = 8;
  pr.window = window;
  pr.heads = 2;
  pr.offsets = std::move(offsets);
  pr.alpha = {1.5, 1.25};
  pr.delta = {0.7, 1.1};
  pr.beta = {0.4, 0.3};
  pr.gamma = {1.3, 0.8};
  pr.log_n_scaling = scaling;
  pr.randomise(seed, 1.5);  // large enough scores that entmax has many exact zeros
  return pr;
}

Problem with(Problem pr, const std::string& variant, const std::function<void(Problem&)>& edit) {
  edit(pr);
  pr.variant = variant;
  return pr;
}

void check_forward_f64(const Problem& pr, Report& r) {
  const auto p = pr.params();
  std::vector<double> out(pr.q.size());
  entmax_attention_forward_cpu<double>(p, pr.q.data(), pr.k.data(), pr.v.data(), out.data());
  r.max_rel("out", out, kernels::reference::entmax_forward(p, pr.q, pr.k, pr.v), 1e-10);
}

void check_forward_f32(const Problem& pr, Report& r) {
  const auto p = pr.params();
  const auto qf = to_float(pr.q), kf = to_float(pr.k), vf = to_float(pr.v);
  std::vector<float> outf(pr.q.size());
  entmax_attention_forward_cpu<float>(p, qf.data(), kf.data(), vf.data(), outf.data());
  // Reference on the float-rounded inputs, so only the kernel's float32 error remains.
  const auto reff =
      kernels::reference::entmax_forward(p, to_double(qf), to_double(kf), to_double(vf));
  r.max_rel("out", to_double(outf), reff, 1e-5);
}

// Finite-difference check of every gradient of L = sum(w * out), over every element.
void check_finite_differences(Problem pr, uint64_t seed, bool check_alpha, Report& r) {
  // Thousands of tiny forward calls: one thread avoids OpenMP start-up and spin-wait
  // costs on a loaded machine (the threaded path is covered by the reference cases).
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  std::mt19937_64 rng(seed);
  const auto w = random_vector(pr.q.size(), rng);
  auto loss = [&]() {
    std::vector<double> out(pr.q.size());
    const auto p = pr.params();
    entmax_attention_forward_cpu<double>(p, pr.q.data(), pr.k.data(), pr.v.data(), out.data());
    return std::inner_product(out.begin(), out.end(), w.begin(), 0.0);
  };
  const auto p = pr.params();
  std::vector<double> gq(pr.q.size()), gk(pr.q.size()), gv(pr.q.size());
  const auto H = static_cast<size_t>(pr.heads);
  std::vector<double> ga(H), gd(H), gb(pr.beta.size()), gg(pr.gamma.size());
  entmax_attention_backward_cpu<double>(p, pr.q.data(), pr.k.data(), pr.v.data(), w.data(),
                                        gq.data(), gk.data(), gv.data(), ga.data(), gd.data(),
                                        gb.data(), gg.data());
  r.fd("dq", finite_difference_error(pr.q, gq, loss), 1e-6);
  r.fd("dk", finite_difference_error(pr.k, gk, loss), 1e-6);
  r.fd("dv", finite_difference_error(pr.v, gv, loss), 1e-6);
  if (!pr.softmax && check_alpha) r.fd("dalpha", finite_difference_error(pr.alpha, ga, loss), 1e-6);
  if (pr.log_n_scaling) {
    r.fd("ddelta", finite_difference_error(pr.delta, gd, loss), 1e-6);
    r.fd("dbeta", finite_difference_error(pr.beta, gb, loss), 1e-6);
    r.fd("dgamma", finite_difference_error(pr.gamma, gg, loss), 1e-6);
  }
  omp_set_num_threads(threads);
}

// Per-query beta and gamma (the authors' adapt-softplus-tanh variant feeds them from
// projections of the hidden state); gamma of both signs.
Problem with_per_query_scale(Problem pr, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(0.1, 1.0), sign(-1.0, 1.0);
  pr.per_query_scale = true;
  pr.beta.resize(static_cast<size_t>(pr.bh * pr.n));
  pr.gamma.resize(pr.beta.size());
  for (auto& e : pr.beta) e = uniform(rng);
  for (auto& e : pr.gamma) e = 2.0 * sign(rng);
  pr.variant += "_perquery";
  return pr;
}

// The finite-difference problems are small (bh = 2, d = 4), so the O(size^2) sweep takes
// seconds.
Problem fd_problem(Problem pr, uint64_t seed) {
  pr.bh = 2;
  pr.d = 4;
  pr.randomise(seed + 1000, 1.5);
  return pr;
}

auto ssmax_edit = [](Problem& p) {
  p.softmax = true;
  p.delta = {0.0, 0.0};
  p.gamma = {1.0, 1.0};
};
auto sparsemax_edit = [](Problem& p) { p.alpha = {2.0, 2.0}; };

REACH_OP_CASES(entmax_attention_cpu_cases) {
  // Forward against the reference: the sparse key set, dense causal keys, the ASEntmax
  // multiplier, sparsemax (a = 2) and SSMax, NAPE (head 0 NoPE, head 1 ALiBi, with and without
  // the log-n scaling, sparse and dense, entmax and softmax), per-query beta and gamma.
  const std::vector<Problem> forward = {
      make_problem(40, 4, {6, 11, 19, 30}, false, 1),
      make_problem(33, 64, {}, false, 2),
      make_problem(40, 5, {7, 13, 21}, true, 3),
      make_problem(30, 30, {}, true, 4),
      with(make_problem(40, 4, {6, 11, 19}, false, 5), "sparsemax", sparsemax_edit),
      with(make_problem(40, 4, {6, 11, 19}, true, 6), "ssmax", ssmax_edit),
      with(make_problem(40, 4, {6, 11, 19, 30}, true, 31), "alibi",
           [](Problem& p) {
             p.alibi = {0.0, 0.25};
           }),
      with(make_problem(33, 64, {}, false, 32), "alibi",
           [](Problem& p) {
             p.alibi = {0.0, 0.5};
           }),
      with(make_problem(33, 64, {}, false, 32), "alibi_softmax",
           [](Problem& p) {
             p.alibi = {0.0, 0.5};
             p.softmax = true;
           }),
      with_per_query_scale(make_problem(36, 4, {6, 11, 19}, true, 21), 22),
  };
  for (const auto& pr : forward) {
    registry.add({"entmax_attention", "cpu", "f64", pr.shape(), "forward",
                  [pr](Report& r) { check_forward_f64(pr, r); }});
    registry.add({"entmax_attention", "cpu", "f32", pr.shape(), "forward",
                  [pr](Report& r) { check_forward_f32(pr, r); }});
  }
  // Every gradient by finite differences. alpha = 2 is the edge of the domain (a central
  // difference would step outside it): sparsemax checks q, k, v and the scale parameters only.
  struct Fd {
    Problem problem;
    uint64_t seed;
    bool check_alpha;
  };
  auto small_per_query = make_problem(12, 3, {4, 9}, true, 23);
  small_per_query.bh = 2;  // fd_problem shrinks to bh = 2, so size beta/gamma for that
  const std::vector<Fd> fd = {
      {fd_problem(with(make_problem(14, 3, {4, 7, 11}, true, 11), "entmax",
                       [](Problem& p) {
                         p.alpha = {1.4, 1.7};
                       }),
                  12),
       12, true},
      {fd_problem(make_problem(10, 16, {}, false, 13), 14), 14, true},
      {fd_problem(with(make_problem(12, 3, {4, 9}, true, 17), "alibi",
                       [](Problem& p) {
                         p.alibi = {0.0, 0.3};
                       }),
                  18),
       18, true},
      {with_per_query_scale(fd_problem(small_per_query, 25), 24), 25, true},
      {fd_problem(with(make_problem(12, 3, {4, 9}, true, 15), "sparsemax", sparsemax_edit), 16), 16,
       false},
      {fd_problem(with(make_problem(12, 3, {4, 9}, true, 17), "ssmax", ssmax_edit), 18), 18, true},
  };
  for (const auto& c : fd) {
    registry.add({"entmax_attention", "cpu", "f64", c.problem.shape(), "fd", [c](Report& r) {
                    check_finite_differences(c.problem, c.seed, c.check_alpha, r);
                  }});
  }
}

// Sparsemax by its sort-based closed form (Martins & Astudillo 2016).
std::vector<double> sparsemax(std::vector<double> z) {
  std::vector<double> sorted = z;
  std::sort(sorted.rbegin(), sorted.rend());
  double cumulative = 0, tau = 0;
  for (size_t k = 0; k < sorted.size(); ++k) {
    cumulative += sorted[k];
    const double candidate = (cumulative - 1) / static_cast<double>(k + 1);
    if (sorted[k] > candidate) tau = candidate;
  }
  for (auto& e : z) e = std::max(0.0, e - tau);
  return z;
}

TEST(EntmaxNormalise, AlphaTwoEqualsSparsemaxWithExactZeros) {
  std::mt19937_64 rng(7);
  int zeros = 0;
  for (int trial = 0; trial < 50; ++trial) {
    auto z = random_vector(24, rng, 1.0);
    auto p = z;
    entmax_normalise_row(p.data(), 24, 2.0);
    const auto expected = sparsemax(z);
    for (size_t j = 0; j < z.size(); ++j) {
      EXPECT_NEAR(p[j], expected[j], 1e-14);
      EXPECT_EQ(p[j] == 0.0, expected[j] == 0.0) << "support differs at " << j;
      zeros += p[j] == 0.0;
    }
  }
  EXPECT_GT(zeros, 100);  // the test exercises exact zeros
}

TEST(EntmaxNormalise, ZerosExactlyBelowThreshold) {
  // For a = 1.5 the support is {j : (a-1) z_j > tau}; everything else must be exactly 0
  // and everything inside strictly positive. Check against the reference's support.
  std::mt19937_64 rng(8);
  for (int trial = 0; trial < 20; ++trial) {
    auto z = random_vector(16, rng, 2.0);
    auto p = z;
    entmax_normalise_row(p.data(), 16, 1.5);
    // tau from the kernel's own output: on the support (a-1) z_j - p_j^(a-1) is constant.
    std::vector<size_t> support;
    for (size_t j = 0; j < z.size(); ++j) {
      if (p[j] > 0) support.push_back(j);
    }
    ASSERT_FALSE(support.empty());
    const double tau = 0.5 * z[support[0]] - std::sqrt(p[support[0]]);
    for (size_t j : support) EXPECT_NEAR(0.5 * z[j] - std::sqrt(p[j]), tau, 1e-12);
    for (size_t j = 0; j < z.size(); ++j) {
      if (p[j] == 0) {
        EXPECT_LE(0.5 * z[j], tau + 1e-12);
      }
    }
    EXPECT_LT(support.size(), z.size());
  }
}

TEST(EntmaxNormalise, RowsSumToOneAndInvisibleSlotsAreZero) {
  std::mt19937_64 rng(9);
  for (double a : {1.01, 1.25, 1.5, 1.75, 2.0}) {
    auto z = random_vector(30, rng, 3.0);
    z[3] = z[17] = kNegInf;
    entmax_normalise_row(z.data(), 30, a);
    EXPECT_NEAR(std::accumulate(z.begin(), z.end(), 0.0), 1.0, 1e-14) << "alpha " << a;
    EXPECT_EQ(z[3], 0.0);
    EXPECT_EQ(z[17], 0.0);
  }
}

TEST(EntmaxNormalise, ApproachesSoftmaxAsAlphaGoesToOne) {
  std::mt19937_64 rng(10);
  const auto z = random_vector(20, rng, 1.0);
  std::vector<double> soft(z.size());
  const double m = *std::max_element(z.begin(), z.end());
  double sum = 0;
  for (size_t j = 0; j < z.size(); ++j) sum += soft[j] = std::exp(z[j] - m);
  for (auto& e : soft) e /= sum;
  double previous = 1.0;
  for (double eps : {1e-1, 1e-2, 1e-3, 1e-4}) {
    auto p = z;
    entmax_normalise_row(p.data(), 20, 1.0 + eps);
    double error = 0;
    for (size_t j = 0; j < z.size(); ++j) error = std::max(error, std::abs(p[j] - soft[j]));
    EXPECT_LT(error, previous);   // converges monotonically here
    EXPECT_LT(error, 2.0 * eps);  // the gap is O(a - 1)
    previous = error;
  }
}

// Published values from the entmax package README (deep-spin/entmax): for x = [-1, 0, 0.5]
// and alpha = 1.33, entmax_bisect gives p = [0.0460, 0.3276, 0.6264] and dp_0/dalpha =
// -0.2562 (4 printed digits, hence 1e-4). Here the last query of a 3-token dense head
// sees keys 0, 1, 2 with scores x (d = 3, q = e_0, k_j = x_j e_0) and values v_j = e_j,
// so its output is p and grad_out = e_0 on that row makes grad_alpha = dp_0/dalpha.
TEST(EntmaxAttentionCpu, MatchesPublishedAlphaGradient) {
  Problem pr;
  pr.bh = 1;
  pr.n = 3;
  pr.d = 3;
  pr.window = 3;
  pr.heads = 1;
  pr.alpha = {1.33};
  pr.q = {1, 0, 0, 1, 0, 0, 1, 0, 0};
  // scale = 1/sqrt(3): undo it in k so that the scores are exactly x.
  const double r3 = std::sqrt(3.0);
  pr.k = {-1 * r3, 0, 0, 0, 0, 0, 0.5 * r3, 0, 0};
  pr.v = {1, 0, 0, 0, 1, 0, 0, 0, 1};
  const auto p = pr.params();
  std::vector<double> out(9), grad_out = {0, 0, 0, 0, 0, 0, 1, 0, 0};
  entmax_attention_forward_cpu<double>(p, pr.q.data(), pr.k.data(), pr.v.data(), out.data());
  EXPECT_NEAR(out[6], 0.0460, 1e-4);
  EXPECT_NEAR(out[7], 0.3276, 1e-4);
  EXPECT_NEAR(out[8], 0.6264, 1e-4);
  std::vector<double> gq(9), gk(9), gv(9);
  double ga = 0;
  entmax_attention_backward_cpu<double>(p, pr.q.data(), pr.k.data(), pr.v.data(), grad_out.data(),
                                        gq.data(), gk.data(), gv.data(), &ga, nullptr, nullptr,
                                        nullptr);
  EXPECT_NEAR(ga, -0.2562, 1e-4);
}

void expect_error(const Problem& pr, const std::string& fragment) {
  const auto p = pr.params();
  std::vector<double> out(pr.q.size());
  try {
    entmax_attention_forward_cpu<double>(p, pr.q.data(), pr.k.data(), pr.v.data(), out.data());
    FAIL() << "expected an error containing '" << fragment << "'";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}
TEST(EntmaxAttentionCpu, BadInputsGetClearErrors) {
  const auto good = make_problem(12, 3, {4, 9}, true, 19);
  for (double a : {1.0, 0.5, 2.5, std::nan("")}) {
    auto bad = good;
    bad.alpha = {1.5, a};
    expect_error(bad, "alpha of head 1 must be in (1, 2]");
  }
  auto nan_q = good;
  nan_q.q[5] = std::nan("");
  expect_error(nan_q, "input q contains NaN");
  auto inf_v = good;
  inf_v.v[7] = std::numeric_limits<double>::infinity();
  expect_error(inf_v, "input v contains NaN");
  auto fractional = good;
  fractional.offsets = {4.5, 9};
  expect_error(fractional, "fractional");
  auto bad_gamma = good;
  bad_gamma.gamma = {std::nan(""), 1.0};
  expect_error(bad_gamma, "gamma of head 0 must be finite");
  auto bad_slope = good;
  bad_slope.alibi = {0.1, -0.5};
  expect_error(bad_slope, "ALiBi slope of head 1 must be finite and >= 0");
  auto bad_heads = good;
  bad_heads.heads = 3;
  expect_error(bad_heads, "num_heads");

  std::vector<double> empty(5, kNegInf);
  EXPECT_THROW(
      {
        try {
          entmax_normalise_row(empty.data(), 5, 1.5);
        } catch (const std::invalid_argument& e) {
          EXPECT_NE(std::string(e.what()).find("empty key set"), std::string::npos);
          throw;
        }
      },
      std::invalid_argument);
  std::vector<double> nan_row = {0.1, std::nan(""), 0.3};
  EXPECT_THROW(entmax_normalise_row(nan_row.data(), 3, 1.5), std::invalid_argument);
  std::vector<double> row = {0.1, 0.2};
  EXPECT_THROW(entmax_normalise_row(row.data(), 2, 1.0), std::invalid_argument);
}

}  // namespace
}  // namespace reach::harness
