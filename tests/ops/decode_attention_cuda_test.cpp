// The decode op on a CUDA GPU (ops/decode_attention.cpp: tensor ops over the gathered key
// set; SDPA for dense causal attention over one request) against the float64 reference
// (kernels/cpu/reference_decode_attention.hpp) on random inputs, never zeros: GQA, budgets per
// request (windows, rungs), fractional offsets, ALiBi, log-n scaling, several queries per
// request, ragged lengths.
//
// Tolerances, relative to the largest reference magnitude, the reference seeing the same
// rounded inputs: float64 1e-12 (summation order only); float32 1e-5 (scores, softmax and the
// weighted sum in float32 over <= ~100 slots of d <= 64: a few hundred ulps of 6e-8);
// bfloat16 4e-3 (the output is rounded to bfloat16, half an ulp = 2^-9 of a value, plus the
// float32 arithmetic: one bfloat16 ulp, 2^-8). keys read must equal the reference's exactly.
// An indexing, mask or budget mistake is O(1). Cases: decode_attention_torch_cuda.*; without a
// GPU they skip.
#include <torch/torch.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/reference_decode_attention.hpp"
#include "ops/decode_attention.hpp"
#include "tests/kernels/harness.hpp"
#include "tests/ops/torch_harness.hpp"

namespace reach::ops {
namespace {

struct DecodeCase {
  std::string shape;
  int64_t batch, heads, kv_heads, d, capacity, queries;
  std::vector<int64_t> lengths, windows, rungs;
  std::vector<double> offsets;
  int64_t window;
  bool alibi = false, log_n = false;
  bool default_scale = false;  // 1 / sqrt(d), as a model passes it (else 0.3)
};

std::vector<DecodeCase> cases() {
  return {
      // Everything at once: GQA, per-request windows and rungs, fractional offsets, ALiBi.
      {"b5_h4_hkv2_d24_q1_budgets_alibi",
       5,
       4,
       2,
       24,
       120,
       1,
       {120, 1, 57, 83, 31},
       {7, 2, 12, 7, 40},
       {6, 6, 3, 0, 6},
       {7, 11.5, 19, 30.25, 50, 81},
       7,
       true,
       false},
      {"b5_h4_hkv2_d24_q9_budgets_alibi",
       5,
       4,
       2,
       24,
       120,
       9,
       {120, 9, 57, 83, 31},
       {7, 2, 12, 7, 40},
       {6, 6, 3, 0, 6},
       {7, 11.5, 19, 30.25, 50, 81},
       7,
       true,
       false},
      // A model's key set: integer Fibonacci offsets, head_dim 64, log-n scaling (SSMax).
      {"b2_h8_hkv2_d64_q1_fibonacci_logn",
       2,
       8,
       2,
       64,
       700,
       1,
       {700, 333},
       {},
       {},
       {13, 21, 34, 55, 89, 144, 233, 377, 610},
       13,
       false,
       true},
      // Dense causal attention, ragged (gathers every row).
      {"b3_h2_hkv1_d32_q1_dense_ragged",
       3,
       2,
       1,
       32,
       300,
       1,
       {300, 1, 150},
       {},
       {},
       {},
       300,
       false,
       false},
  };
}

torch::Tensor to_tensor(const std::vector<double>& x, std::vector<int64_t> shape,
                        torch::ScalarType type) {
  return torch::tensor(x, torch::kFloat64).view(shape).to(torch::kCUDA, type);
}

void check(const DecodeCase& c, torch::ScalarType type, harness::Report& r) {
  if (!torch::cuda::is_available()) return r.skip("no CUDA device");
  std::mt19937_64 rng(harness::seed_of(c.shape));
  std::normal_distribution<double> normal(0.0, 1.0);
  auto random = [&](int64_t n) {
    std::vector<double> x(static_cast<size_t>(n));
    for (auto& e : x) e = normal(rng);
    return x;
  };
  const std::vector<int64_t> q_shape{c.batch, c.heads, c.queries, c.d},
      cache_shape{c.batch, c.kv_heads, c.capacity, c.d};
  const auto q = to_tensor(random(c.batch * c.heads * c.queries * c.d), q_shape, type);
  const auto k = to_tensor(random(c.batch * c.kv_heads * c.capacity * c.d), cache_shape, type);
  const auto v = to_tensor(random(c.batch * c.kv_heads * c.capacity * c.d), cache_shape, type);
  const std::vector<double> slopes{0.0, 0.1, 0.5, 0.02, 0.3, 0.05, 0.2, 0.01};
  std::vector<double> delta, beta, gamma;
  for (int64_t h = 0; h < c.heads; ++h) {
    delta.push_back(0.5 + 0.1 * static_cast<double>(h));
    beta.push_back(0.2 + 0.05 * static_cast<double>(h));
    gamma.push_back(0.4 + 0.1 * static_cast<double>(h));
  }
  DecodeAttentionOptions o;
  o.window = c.window;
  o.offsets = c.offsets;
  const double scale = c.default_scale ? 1.0 / std::sqrt(static_cast<double>(c.d)) : 0.3;
  if (!c.default_scale) o.scale = scale;
  o.windows = c.windows;
  o.rungs = c.rungs;
  const auto per_head = [&](const std::vector<double>& x) {
    return torch::tensor(std::vector<double>(x.begin(), x.begin() + c.heads), torch::kFloat64)
        .to(torch::kCUDA);
  };
  if (c.alibi) o.alibi_slopes = per_head(slopes);
  if (c.log_n) {
    o.delta = per_head(delta);
    o.beta = per_head(beta);
    o.gamma = per_head(gamma);
  }
  const auto got = decode_attention(q, k, v, c.lengths, o);

  kernels::DecodeAttentionParams p;
  p.batch = c.batch;
  p.heads = c.heads;
  p.kv_heads = c.kv_heads;
  p.head_dim = c.d;
  p.capacity = c.capacity;
  p.lengths = c.lengths.data();
  p.queries = c.queries;
  p.window = c.window;
  p.offsets = c.offsets.data();
  p.num_offsets = static_cast<int64_t>(c.offsets.size());
  p.scale = scale;
  p.windows = c.windows.empty() ? nullptr : c.windows.data();
  p.rung_limits = c.rungs.empty() ? nullptr : c.rungs.data();
  p.alibi_slopes = c.alibi ? slopes.data() : nullptr;
  p.log_n_scaling = c.log_n;
  p.delta = c.log_n ? delta.data() : nullptr;
  p.beta = c.log_n ? beta.data() : nullptr;
  p.gamma = c.log_n ? gamma.data() : nullptr;
  // The reference sees the rounded inputs.
  const auto want = kernels::reference::decode_forward(
      p, harness::host_values(q), harness::host_values(k), harness::host_values(v));
  const double bound = type == torch::kFloat64 ? 1e-12 : type == torch::kFloat32 ? 1e-5 : 4e-3;
  r.max_rel("out vs the float64 reference", harness::host_values(got.out), want.out, bound);
  if (got.keys_read != want.keys_read) r.fail("keys read differ from the reference's");
}

void check_errors(harness::Report& r) {
  if (!torch::cuda::is_available()) return r.skip("no CUDA device");
  const auto q = torch::randn({1, 2, 1, 16}, torch::kCUDA);
  const auto k = torch::randn({1, 2, 10, 16}, torch::kCUDA);
  int wrong = 0;  // bad inputs accepted, or refused without naming the problem
  auto expect_error = [&](const DecodeAttentionOptions& o, const std::vector<int64_t>& lengths,
                          const torch::Tensor& kk, const std::string& words) {
    try {
      decode_attention(q, kk, kk, lengths, o);
      r.fail("accepted: " + words);
      ++wrong;
    } catch (const std::invalid_argument& e) {
      if (std::string(e.what()).find(words) == std::string::npos) {
        r.fail("error lacks '" + words + "': " + e.what());
        ++wrong;
      }
    }
  };
  DecodeAttentionOptions entmax;
  entmax.entmax = true;
  entmax.entmax_alpha = torch::full({2}, 1.5);
  expect_error(entmax, {10}, k, "CPU only");
  DecodeAttentionOptions mass;
  mass.mass = {0.5};
  expect_error(mass, {10}, k, "CPU only");
  expect_error({}, {11}, k, "outside 1..10");
  expect_error({}, {10}, k.cpu(), "one device");
  expect_error({}, {10}, k.to(torch::kFloat64), "one dtype");
  r.lt("bad inputs accepted or not named (of 5)", wrong, 0.5);
}

REACH_OP_CASES(decode_attention_cuda_cases) {
  const std::pair<const char*, torch::ScalarType> types[] = {
      {"f64", torch::kFloat64}, {"f32", torch::kFloat32}, {"bf16", torch::kBFloat16}};
  for (const auto& c : cases()) {
    for (const auto& [name, type] : types) {
      registry.add({"decode_attention", "torch_cuda", name, c.shape, "vs_reference",
                    [c, type](harness::Report& r) { check(c, type, r); }});
    }
  }
  // Dense causal attention over one request: SDPA (LibTorch >= 2.5) with GQA; its fused
  // kernels take 16- and 32-bit floats (float32 accumulators over 1234 keys: ~1e-6).
  DecodeCase sdpa{
      "b1_h8_hkv2_d64_n1234_dense_sdpa", 1, 8, 2, 64, 1500, 1, {1234}, {}, {}, {}, 1234};
  sdpa.default_scale = true;
  for (const auto& [name, type] : types) {
    if (type == torch::kFloat64) continue;
    registry.add({"decode_attention", "torch_cuda", name, sdpa.shape, "vs_reference",
                  [sdpa, type](harness::Report& r) { check(sdpa, type, r); }});
  }
  registry.add({"decode_attention", "torch_cuda", "f32", "b1_h2_d16", "errors", check_errors});
}

}  // namespace
}  // namespace reach::ops
