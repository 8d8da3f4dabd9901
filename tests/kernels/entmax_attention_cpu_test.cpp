// alpha-entmax attention against a float64 reference built from the definition (explicit
// mask; threshold found per candidate support size on sorted scores in long double), the
// sparsemax closed form at alpha = 2, the softmax limit, exact zeros, and finite differences.
//
// Tolerances: the float64 kernel and the reference solve the same threshold equation to
// ~1e-16 with different algorithms, so outputs agree to 1e-10 relative; float32 inputs are
// accumulated in double inside the kernel, so only input/output rounding (~6e-8) remains: 1e-5.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "kernels/cpu/entmax_attention.hpp"

namespace reach::kernels {
namespace {

// Reference entmax: for each support size k (largest scores first) solve
// sum_{i<=k} ((a-1) z_i - tau)^(1/(a-1)) = 1 by bisection in long double and keep the k whose
// tau lies in [(a-1) z_(k+1), (a-1) z_k).
std::vector<double> reference_entmax(const std::vector<double>& z, double alpha) {
  const long double am1 = alpha - 1.0L;
  std::vector<long double> x(z.size());
  for (size_t i = 0; i < z.size(); ++i) x[i] = am1 * z[i];
  std::vector<long double> sorted = x;
  std::sort(sorted.rbegin(), sorted.rend());
  long double tau = 0;
  for (size_t k = 1; k <= sorted.size(); ++k) {
    long double lo = sorted[0] - 1, hi = sorted[k - 1];
    for (int it = 0; it < 200; ++it) {
      const long double mid = (lo + hi) / 2;
      long double mass = 0;
      for (size_t i = 0; i < k; ++i) mass += std::pow(sorted[i] - mid, 1 / am1);
      (mass >= 1 ? lo : hi) = mid;
    }
    tau = lo;
    if (k == sorted.size() || sorted[k] <= tau) break;
  }
  std::vector<double> p(z.size());
  for (size_t i = 0; i < z.size(); ++i) {
    p[i] = x[i] > tau ? static_cast<double>(std::pow(x[i] - tau, 1 / am1)) : 0.0;
  }
  return p;
}

std::vector<double> random_vector(size_t n, std::mt19937_64& rng, double sd = 1.0) {
  std::normal_distribution<double> normal(0, sd);
  std::vector<double> x(n);
  for (auto& e : x) e = normal(rng);
  return x;
}

TEST(Entmax, BisectionMatchesDefinitionSparsemaxAndSoftmaxLimit) {
  std::mt19937_64 rng(5);
  for (double alpha : {1.1, 1.5, 1.8, 2.0}) {
    for (int trial = 0; trial < 12; ++trial) {
      const auto z = random_vector(1 + trial * 4, rng, 2.0);
      std::vector<double> p(z.size());
      entmax_bisect(z.data(), static_cast<int64_t>(z.size()), alpha, p.data());
      const auto want = reference_entmax(z, alpha);
      double sum = 0;
      for (size_t i = 0; i < z.size(); ++i) {
        EXPECT_NEAR(p[i], want[i], 1e-10) << "alpha " << alpha;
        EXPECT_GE(p[i], 0.0);
        EXPECT_EQ(p[i] == 0.0, want[i] == 0.0) << "support differs, alpha " << alpha;
        sum += p[i];
      }
      EXPECT_NEAR(sum, 1.0, 1e-12);
    }
  }
  // alpha = 2 is sparsemax: tau = (sum of the top k - 1) / k, closed form.
  const std::vector<double> z{1.5, 0.2, 1.1, -0.7, 0.9};
  std::vector<double> p(5);
  entmax_bisect(z.data(), 5, 2.0, p.data());
  const double tau = (1.5 + 1.1 + 0.9 - 1.0) / 3.0;
  EXPECT_NEAR(p[0], 1.5 - tau, 1e-12);
  EXPECT_NEAR(p[2], 1.1 - tau, 1e-12);
  EXPECT_NEAR(p[4], 0.9 - tau, 1e-12);
  EXPECT_EQ(p[1], 0.0);  // exact zeros, not tiny numbers
  EXPECT_EQ(p[3], 0.0);
  // alpha -> 1 approaches softmax.
  const auto w = random_vector(12, rng);
  std::vector<double> q(12), soft(12);
  entmax_bisect(w.data(), 12, 1.0001, q.data());
  double zsum = 0;
  for (int i = 0; i < 12; ++i) zsum += (soft[i] = std::exp(w[i]));
  for (int i = 0; i < 12; ++i) EXPECT_NEAR(q[i], soft[i] / zsum, 2e-3);
}

struct Problem {
  int64_t bh, heads, n, d, window;
  std::vector<double> offsets;
  double alpha;
  bool scaled;
};

EntmaxParams params_of(const Problem& c, const std::vector<double>& delta,
                       const std::vector<double>& beta, const std::vector<double>& gamma) {
  EntmaxParams e;
  e.attention = {c.bh,
                 c.n,
                 c.d,
                 c.window,
                 c.offsets.data(),
                 static_cast<int64_t>(c.offsets.size()),
                 1.0 / std::sqrt(double(c.d))};
  e.heads = c.heads;
  e.alpha = c.alpha;
  if (c.scaled) {
    e.delta = delta.data();
    e.beta = beta.data();
    e.gamma = gamma.data();
  }
  return e;
}

// Dense reference attention: explicit mask, reference entmax per row.
std::vector<double> reference_attention(const EntmaxParams& e, const std::vector<double>& q,
                                        const std::vector<double>& k,
                                        const std::vector<double>& v) {
  const auto& p = e.attention;
  const int64_t n = p.seq_len, d = p.head_dim;
  std::vector<double> out(q.size(), 0.0);
  for (int64_t bh = 0; bh < p.batch_heads; ++bh) {
    for (int64_t i = 0; i < n; ++i) {
      std::vector<int64_t> keys;
      for (int64_t j = 0; j <= i; ++j) {
        bool seen = i - j < p.window;
        for (int64_t o = 0; o < p.num_offsets; ++o) seen = seen || i - j == p.offsets[o];
        if (seen) keys.push_back(j);
      }
      double s = 1.0;
      if (e.delta) {
        const int64_t h = bh % e.heads;
        s = e.delta[h] + e.beta[h] * std::pow(std::log(double(keys.size())), e.gamma[h]);
      }
      std::vector<double> z;
      for (int64_t j : keys) {
        double acc = 0;
        for (int64_t t = 0; t < d; ++t) acc += q[(bh * n + i) * d + t] * k[(bh * n + j) * d + t];
        z.push_back(s * p.scale * acc);
      }
      const auto prob = reference_entmax(z, e.alpha);
      for (size_t a = 0; a < keys.size(); ++a) {
        for (int64_t t = 0; t < d; ++t) {
          out[(bh * n + i) * d + t] += prob[a] * v[(bh * n + keys[a]) * d + t];
        }
      }
    }
  }
  return out;
}

std::vector<Problem> problems() {
  return {{1, 1, 1, 16, 4, {}, 1.5, false},
          {2, 2, 9, 16, 64, {}, 1.5, true},
          {3, 3, 60, 32, 6, {6, 10, 16, 26, 42}, 1.5, true},
          {2, 1, 77, 64, 8, {8, 13, 21, 34, 55}, 2.0, false},
          {1, 1, 50, 24, 3, {3, 5, 8, 13, 21, 34}, 1.25, true}};
}

TEST(EntmaxAttention, ForwardMatchesReference) {
  std::mt19937_64 rng(11);
  for (const auto& c : problems()) {
    const std::vector<double> delta{0.9, 1.1, 0.8}, beta{0.3, 0.2, 0.5}, gamma{1.2, 0.8, 1.0};
    const auto e = params_of(c, delta, beta, gamma);
    const size_t size = static_cast<size_t>(c.bh * c.n * c.d);
    const auto q = random_vector(size, rng, 1.5), k = random_vector(size, rng, 1.5),
               v = random_vector(size, rng);
    const auto want = reference_attention(e, q, k, v);
    std::vector<double> out(size, NAN);
    entmax_attention_forward_cpu<double>(e, q.data(), k.data(), v.data(), out.data());
    for (size_t i = 0; i < size; ++i) ASSERT_NEAR(out[i], want[i], 1e-10) << "n=" << c.n;
    std::vector<float> qf(q.begin(), q.end()), kf(k.begin(), k.end()), vf(v.begin(), v.end()),
        outf(size, NAN);
    entmax_attention_forward_cpu<float>(e, qf.data(), kf.data(), vf.data(), outf.data());
    for (size_t i = 0; i < size; ++i) ASSERT_NEAR(outf[i], want[i], 1e-5) << "float n=" << c.n;
  }
}

TEST(EntmaxAttention, GradientsMatchFiniteDifferences) {
  std::mt19937_64 rng(3);
  Problem c{2, 2, 30, 8, 4, {4, 7, 11, 18}, 1.5, true};
  std::vector<double> delta{0.9, 1.2}, beta{0.4, 0.3}, gamma{1.1, 0.9};
  const size_t size = static_cast<size_t>(c.bh * c.n * c.d);
  auto q = random_vector(size, rng), k = random_vector(size, rng), v = random_vector(size, rng);
  const auto g = random_vector(size, rng);
  auto loss = [&] {
    const auto e = params_of(c, delta, beta, gamma);
    std::vector<double> out(size);
    entmax_attention_forward_cpu<double>(e, q.data(), k.data(), v.data(), out.data());
    double l = 0;
    for (size_t i = 0; i < size; ++i) l += out[i] * g[i];
    return l;
  };
  const auto e = params_of(c, delta, beta, gamma);
  std::vector<double> dq(size), dk(size), dv(size), dd(2), db(2), dg(2);
  entmax_attention_backward_cpu<double>(e, q.data(), k.data(), v.data(), g.data(), dq.data(),
                                        dk.data(), dv.data(), dd.data(), db.data(), dg.data());
  const double h = 1e-6;
  auto check = [&](std::vector<double>& x, const std::vector<double>& grad, size_t i,
                   const char* what) {
    const double saved = x[i];
    x[i] = saved + h;
    const double up = loss();
    x[i] = saved - h;
    const double down = loss();
    x[i] = saved;
    EXPECT_NEAR(grad[i], (up - down) / (2 * h), 2e-6 * std::max(1.0, std::abs(grad[i])))
        << what << " " << i;
  };
  std::uniform_int_distribution<size_t> pick(0, size - 1);
  for (int t = 0; t < 20; ++t) {
    check(q, dq, pick(rng), "q");
    check(k, dk, pick(rng), "k");
    check(v, dv, pick(rng), "v");
  }
  for (size_t hd = 0; hd < 2; ++hd) {
    check(delta, dd, hd, "delta");
    check(beta, db, hd, "beta");
    check(gamma, dg, hd, "gamma");
  }
}

TEST(EntmaxAttention, BadInputGivesClearErrors) {
  std::vector<double> x(64, 0.5), out(64);
  std::vector<double> frac{4.5};
  auto run = [&](EntmaxParams e) {
    entmax_attention_forward_cpu<double>(e, x.data(), x.data(), x.data(), out.data());
  };
  EntmaxParams e;
  e.attention = {1, 4, 16, 4, nullptr, 0, 0.25};
  EXPECT_NO_THROW(run(e));
  for (double bad : {1.0, 0.5, 2.5, std::nan("")}) {
    auto b = e;
    b.alpha = bad;
    EXPECT_THROW(run(b), std::invalid_argument) << bad;
  }
  auto b = e;
  b.attention.offsets = frac.data();
  b.attention.num_offsets = 1;
  EXPECT_THROW(run(b), std::invalid_argument);
  std::vector<double> one{1.0};
  b = e;
  b.delta = one.data();  // beta, gamma missing
  EXPECT_THROW(run(b), std::invalid_argument);
  x[3] = NAN;
  try {
    run(e);
    ADD_FAILURE();
  } catch (const std::invalid_argument& ex) {
    EXPECT_NE(std::string(ex.what()).find("non-finite"), std::string::npos);
  }
}

}  // namespace
}  // namespace reach::kernels
