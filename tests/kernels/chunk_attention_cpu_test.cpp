// Hierarchical chunk sparse attention (CPU kernel) against the float64 reference built
// from the definition, finite differences of the reference, and the documented edge
// behaviour (no candidate -> zeros, ties -> lower chunk index), on random inputs.
// Op harness cases (tests/kernels/harness.hpp): chunk_attention_cpu.{f64,f32}_SHAPE_fwd_bwd and
// chunk_attention_reference_cpu.f64_SHAPE_fd; the edge cases and errors are plain TESTs.
//
// Tolerances, relative to the largest magnitude of the expected tensor (or absolute below 1):
// * float64 kernel vs reference: 1e-11. Both are float64 with different summation orders
//   (streamed top-k, log-sum-exp saved and reused, two-pass backward): rounding of
//   O(S * d + k) terms, ~1e-14, amplified by the softmax exponent; indexing or weighting
//   errors are O(1e-2) or more.
// * float32 kernel vs reference on the same (float-rounded) inputs: 2e-5. The kernel
//   accumulates in float64 but stores out, weights and lse in float32 (relative 6e-8); the
//   backward's exp(z - lse) carries the lse rounding times |lse| <= ~10 here.
// * finite differences of the reference (central, step 1e-6): 1e-6 relative + absolute
//   (truncation ~1e-12, rounding ~1e-10 / 1e-6 = 1e-10 per term).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "kernels/cpu/chunk_attention.hpp"
#include "kernels/cpu/reference_chunk_attention.hpp"
#include "tests/kernels/harness.hpp"

namespace reach::kernels {
namespace {

struct Shape {
  std::string name;
  int64_t batch, query_heads, kv_heads, seq_len, head_dim, retrieval_dim;
  pattern::ChunkSelection selection;
  ChunkWeighting weighting = ChunkWeighting::softmax;
};

std::vector<Shape> shapes() {
  using pattern::ChunkBudgetRule;
  std::vector<Shape> base = {
      // GQA (2 query heads per group), n not a multiple of S (trailing partial chunk).
      {"gqa_tail", 2, 4, 2, 37, 8, 6, {4, 3, 0}},
      // Local window excludes chunks wholly inside it.
      {"window", 1, 2, 2, 32, 16, 16, {8, 2, 10}},
      // S = 1: every token is a chunk; one KV group for three heads.
      {"chunk_of_one", 1, 3, 1, 24, 4, 5, {1, 4, 0}},
      // k larger than any candidate count.
      {"k_above_candidates", 1, 2, 1, 20, 8, 8, {4, 8, 0}},
      // Fraction budget: k = clamp(ceil(0.3 C), 2, 5).
      {"fraction_budget", 1, 2, 2, 48, 8, 4, {3, 5, 0, ChunkBudgetRule::fraction, 0.3, 2}},
  };
  std::vector<Shape> all;
  for (auto s : base) {
    all.push_back(s);
    s.name += "_stick";
    s.weighting = ChunkWeighting::stick_breaking;
    all.push_back(s);
  }
  return all;
}

ChunkAttentionParams params_of(const Shape& s) {
  ChunkAttentionParams p;
  p.batch = s.batch;
  p.query_heads = s.query_heads;
  p.kv_heads = s.kv_heads;
  p.seq_len = s.seq_len;
  p.head_dim = s.head_dim;
  p.retrieval_dim = s.retrieval_dim;
  p.selection = s.selection;
  p.weighting = s.weighting;
  p.scale = 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  p.retrieval_scale = 1.0 / std::sqrt(static_cast<double>(s.retrieval_dim));
  return p;
}

struct Inputs {
  std::vector<double> q, k, v, r, landmarks, grad_out;
};

std::vector<double> normal(size_t size, std::mt19937_64& rng, double sd) {
  std::normal_distribution<double> dist(0.0, sd);
  std::vector<double> x(size);
  for (auto& e : x) e = dist(rng);
  return x;
}

// Random inputs (never zeros); float32 cases get values already rounded to float so the
// reference sees exactly what the kernel sees.
Inputs random_inputs(const ChunkAttentionParams& p, uint64_t seed, bool round_to_float) {
  std::mt19937_64 rng(seed);
  const auto qn = static_cast<size_t>(p.batch * p.query_heads * p.seq_len * p.head_dim);
  const auto kn = static_cast<size_t>(p.batch * p.kv_heads * p.seq_len * p.head_dim);
  const auto rn = static_cast<size_t>(p.batch * p.kv_heads * p.seq_len * p.retrieval_dim);
  const auto ln = static_cast<size_t>(p.batch * p.kv_heads * p.chunks() * p.retrieval_dim);
  // Retrieval vectors of sd 2 spread the landmark scores (sd ~2): distinct top-k, so finite
  // differences stay away from selection changes; token scores of sd ~1.
  Inputs in{normal(qn, rng, 1.0), normal(kn, rng, 1.0), normal(kn, rng, 1.0),
            normal(rn, rng, 2.0), normal(ln, rng, 1.0), normal(qn, rng, 1.0)};
  if (round_to_float) {
    for (auto* x : {&in.q, &in.k, &in.v, &in.r, &in.landmarks, &in.grad_out}) {
      for (auto& e : *x) e = static_cast<double>(static_cast<float>(e));
    }
  }
  return in;
}

template <typename T>
std::vector<T> cast(const std::vector<double>& x) {
  return std::vector<T>(x.begin(), x.end());
}

struct KernelResult {
  std::vector<int64_t> indices;
  std::vector<double> out, weights, lse;
  std::vector<double> gq, gk, gv, gr, gl;
};

template <typename T>
KernelResult run_kernel(const ChunkAttentionParams& p, const Inputs& in) {
  const auto q = cast<T>(in.q), k = cast<T>(in.k), v = cast<T>(in.v), r = cast<T>(in.r),
             l = cast<T>(in.landmarks), go = cast<T>(in.grad_out);
  const auto slots = static_cast<size_t>(p.batch * p.kv_heads * p.seq_len * p.slots());
  const auto qslots = static_cast<size_t>(p.batch * p.query_heads * p.seq_len * p.slots());
  std::vector<T> out(q.size()), weights(slots), lse(qslots);
  std::vector<int64_t> indices(slots);
  chunk_attention_forward_cpu<T>(p, q.data(), k.data(), v.data(), r.data(), l.data(), out.data(),
                                 indices.data(), weights.data(), lse.data());
  std::vector<T> gq(q.size(), T(7)), gk(k.size(), T(7)), gv(v.size(), T(7)), gr(r.size(), T(7)),
      gl(l.size(), T(7));  // not zero: the kernel must overwrite every gradient
  chunk_attention_backward_cpu<T>(p, q.data(), k.data(), v.data(), r.data(), l.data(), go.data(),
                                  indices.data(), weights.data(), lse.data(), gq.data(), gk.data(),
                                  gv.data(), gr.data(), gl.data());
  auto d = [](const std::vector<T>& x) { return std::vector<double>(x.begin(), x.end()); };
  return {indices, d(out), d(weights), d(lse), d(gq), d(gk), d(gv), d(gr), d(gl)};
}

// The kernel (float64, float32) against the reference: indices, weights, output, every
// gradient.
void check_against_reference(const Shape& shape, bool f32, harness::Report& r) {
  const auto p = params_of(shape);
  const Inputs in = random_inputs(p, 1234 + shape.seq_len, f32);
  const auto want = reference::chunk_forward(p, in.q, in.k, in.v, in.r, in.landmarks);
  const auto grads =
      reference::chunk_backward(p, in.q, in.k, in.v, in.r, in.landmarks, in.grad_out);
  const KernelResult got = f32 ? run_kernel<float>(p, in) : run_kernel<double>(p, in);
  const double tol = f32 ? 2e-5 : 1e-11;
  if (got.indices != want.indices) r.fail("selected chunk indices differ from the reference");
  r.max_scaled("weights", got.weights, want.weights, tol);
  r.max_scaled("out", got.out, want.out, tol);
  r.max_scaled("grad q", got.gq, grads.q, tol);
  r.max_scaled("grad k", got.gk, grads.k, tol);
  r.max_scaled("grad v", got.gv, grads.v, tol);
  r.max_scaled("grad r", got.gr, grads.r, tol);
  r.max_scaled("grad landmarks", got.gl, grads.landmarks, tol);
  // Every query with a candidate selected something, and the gradients are not all zero.
  double gl_norm = 0;
  for (double x : grads.landmarks) gl_norm += x * x;
  if (!(gl_norm > 1e-6)) r.fail("the landmark gradient is (nearly) all zero");
}

// The reference's backward against central differences of its own forward, on a sample of
// every input's elements (the selection must not change under the step).
void check_reference_finite_differences(const Shape& shape, harness::Report& r) {
  const auto p = params_of(shape);
  Inputs in = random_inputs(p, 99, false);
  const auto base = reference::chunk_forward(p, in.q, in.k, in.v, in.r, in.landmarks);
  const auto grads =
      reference::chunk_backward(p, in.q, in.k, in.v, in.r, in.landmarks, in.grad_out);
  bool selection_changed = false;
  auto loss = [&]() {
    const auto f = reference::chunk_forward(p, in.q, in.k, in.v, in.r, in.landmarks);
    selection_changed |= f.indices != base.indices;
    double s = 0;
    for (size_t j = 0; j < f.out.size(); ++j) s += f.out[j] * in.grad_out[j];
    return s;
  };
  std::mt19937_64 rng(5);
  struct Named {
    const char* name;
    std::vector<double>* x;
    const std::vector<double>* g;
  };
  for (const Named& t :
       {Named{"q", &in.q, &grads.q}, Named{"k", &in.k, &grads.k}, Named{"v", &in.v, &grads.v},
        Named{"r", &in.r, &grads.r}, Named{"landmarks", &in.landmarks, &grads.landmarks}}) {
    const auto picks = harness::sample_indices(t.x->size(), 12, rng);
    r.fd(std::string("grad ") + t.name, harness::finite_difference_error(*t.x, *t.g, loss, picks),
         1e-6);
  }
  if (selection_changed) r.fail("selection changed under the finite-difference step");
}

REACH_OP_CASES(chunk_attention_cpu_cases) {
  for (const auto& s : shapes()) {
    for (const bool f32 : {false, true}) {
      registry.add({"chunk_attention", "cpu", f32 ? "f32" : "f64", s.name, "fwd_bwd",
                    [s, f32](harness::Report& r) { check_against_reference(s, f32, r); }});
    }
    registry.add({"chunk_attention_reference", "cpu", "f64", s.name, "fd",
                  [s](harness::Report& r) { check_reference_finite_differences(s, r); }});
  }
}

TEST(ChunkAttentionCpuEdges, QueriesWithoutCandidatesOutputZeros) {
  Shape s{"zeros", 1, 2, 1, 16, 4, 4, {4, 2, 6}};
  const auto p = params_of(s);
  const Inputs in = random_inputs(p, 3, false);
  const KernelResult got = run_kernel<double>(p, in);
  for (int64_t h = 0; h < 2; ++h) {
    for (int64_t t = 0; t < 16; ++t) {
      const bool none = pattern::candidate_chunks(p.selection, t) == 0;  // t < 6 = W
      double norm = 0;
      for (int64_t e = 0; e < 4; ++e) norm += std::abs(got.out[(h * 16 + t) * 4 + e]);
      if (none) {
        EXPECT_EQ(norm, 0.0) << "t=" << t;
        EXPECT_EQ(got.indices[t * 2], -1) << "t=" << t;
      } else {
        EXPECT_GT(norm, 0.0) << "t=" << t;
      }
    }
  }
  // Chunk 0 (0..3) is past from t = 4 but wholly inside the window t-5..t until t = 6.
  EXPECT_EQ(pattern::candidate_chunks(p.selection, 5), 0);
  EXPECT_EQ(pattern::candidate_chunks(p.selection, 6), 1);
}

TEST(ChunkAttentionCpuEdges, SequenceShorterThanOneChunkGivesZerosEverywhere) {
  // n = 3 < S = 4: no complete chunk, no landmark; output and every gradient are zero.
  for (const auto weighting : {ChunkWeighting::softmax, ChunkWeighting::stick_breaking}) {
    Shape s{"short", 2, 2, 1, 3, 4, 4, {4, 2, 0}, weighting};
    const auto p = params_of(s);
    ASSERT_EQ(p.chunks(), 0);
    const KernelResult got = run_kernel<double>(p, random_inputs(p, 8, false));
    for (const auto* x : {&got.out, &got.gq, &got.gk, &got.gv, &got.gr}) {
      for (double e : *x) EXPECT_EQ(e, 0.0);
    }
    EXPECT_TRUE(got.gl.empty());
    for (int64_t i : got.indices) EXPECT_EQ(i, -1);
  }
}

TEST(ChunkAttentionCpuEdges, TiesGoToTheLowerChunkIndex) {
  Shape s{"ties", 1, 1, 1, 40, 4, 3, {4, 3, 0}};
  const auto p = params_of(s);
  Inputs in = random_inputs(p, 4, false);
  // Chunks 1, 3, 5 and 7 share one landmark that scores highest; 0, 2, 4, 6, 8 another.
  for (int64_t i = 0; i < p.chunks(); ++i) {
    for (int64_t e = 0; e < 3; ++e) in.landmarks[i * 3 + e] = i % 2 ? 1.0 : -1.0;
  }
  for (auto& x : in.r) x = 0.5;
  const KernelResult got = run_kernel<double>(p, in);
  const auto want = reference::chunk_forward(p, in.q, in.k, in.v, in.r, in.landmarks);
  const int64_t t = 39;  // candidates 0..8
  EXPECT_EQ(std::vector<int64_t>(got.indices.begin() + t * 3, got.indices.begin() + t * 3 + 3),
            (std::vector<int64_t>{1, 3, 5}));
  EXPECT_EQ(got.indices, want.indices);
  // t = 12: candidates 0, 1, 2 -> 1 first, then 0 and 2 (tied, lower first).
  EXPECT_EQ(std::vector<int64_t>(got.indices.begin() + 36, got.indices.begin() + 39),
            (std::vector<int64_t>{1, 0, 2}));
}

TEST(ChunkAttentionCpuEdges, BadParamsAreClearErrors) {
  auto p = params_of({"bad", 1, 2, 1, 16, 4, 4, {4, 2, 0}});
  std::vector<double> x(128, 0.5), out(128), w(32), lse(64);
  std::vector<int64_t> idx(32);
  auto message = [&](const ChunkAttentionParams& bad) {
    try {
      chunk_attention_forward_cpu<double>(bad, x.data(), x.data(), x.data(), x.data(), x.data(),
                                          out.data(), idx.data(), w.data(), lse.data());
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message(p), "no error");
  auto bad = p;
  bad.selection.chunk_size = 0;
  EXPECT_EQ(message(bad), "chunk_attention: chunk size S must be >= 1, got 0");
  bad = p;
  bad.selection.top_k = 0;
  EXPECT_EQ(message(bad), "chunk_attention: top-k must be >= 1, got 0");
  bad = p;
  bad.query_heads = 3;
  bad.kv_heads = 2;
  EXPECT_EQ(message(bad), "chunk_attention: query heads (3) must be a multiple of kv heads (2)");
  bad = p;
  bad.retrieval_dim = 0;
  EXPECT_EQ(message(bad), "chunk_attention: retrieval_dim must be >= 1, got 0");
  bad = p;
  bad.scale = -1;
  EXPECT_NE(message(bad).find("scales must be positive"), std::string::npos);
  EXPECT_THROW(
      chunk_attention_forward_cpu<double>(p, x.data(), x.data(), x.data(), x.data(), x.data(),
                                          out.data(), idx.data(), nullptr, lse.data()),
      std::invalid_argument);
  EXPECT_THROW(parse_chunk_weighting("sparsemax"), std::invalid_argument);
}

}  // namespace
}  // namespace reach::kernels
