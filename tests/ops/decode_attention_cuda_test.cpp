// The decode op on a CUDA GPU (ops/decode_attention.cpp: the CUDA decode kernel for bf16 and
// float32 key sets with integer offsets; tensor ops over the gathered key set for float64 and
// fractional offsets; SDPA for dense causal attention over one length) against the float64
// reference (kernels/cpu/reference_decode_attention.hpp) on random inputs, never zeros: GQA,
// budgets per request (windows, rungs), fractional offsets, ALiBi, log-n scaling, several
// queries per request, ragged lengths (1, shorter than the window), and every family through
// the kernel (window, Fibonacci, power-of-2, dense, R = 1..5). Each case also checks which
// implementation ran, so a kernel case cannot pass through a fallback.
//
// Tolerances, relative to the largest reference magnitude, the reference seeing the same
// rounded inputs: float64 1e-12 (summation order only); float32 1e-5 (scores, softmax and the
// weighted sum in float32 over <= ~100 slots of d <= 64: a few hundred ulps of 6e-8);
// bfloat16 4e-3 (the output is rounded to bfloat16, half an ulp = 2^-9 of a value, plus the
// float32 arithmetic: one bfloat16 ulp, 2^-8). keys read must equal the reference's exactly.
// An indexing, mask or budget mistake is O(1). Cases: decode_attention_torch_cuda.*; without a
// GPU they skip.
#include <torch/torch.h>

#include <algorithm>
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
      // The families through the CUDA kernel (bf16 and float32): a window over R = 5 requests
      // of lengths 1, shorter than the window and at the capacity, GQA group 4.
      {"b5_h8_hkv2_d64_q1_window",
       5,
       8,
       2,
       64,
       200,
       1,
       {1, 7, 16, 40, 200},
       {},
       {},
       {},
       16,
       false,
       false,
       true},
      // Power-of-2 offsets, head_dim 128, no GQA.
      {"b4_h4_hkv4_d128_q1_power2",
       4,
       4,
       4,
       128,
       300,
       1,
       {3, 9, 129, 300},
       {},
       {},
       {8, 16, 32, 64, 128, 256},
       8,
       false,
       false,
       true},
      // Fibonacci over one request; 16 query heads on one KV head (two blocks of 8 heads).
      {"b1_h16_hkv1_d64_q1_fibonacci",
       1,
       16,
       1,
       64,
       500,
       1,
       {500},
       {},
       {},
       {21, 34, 55, 89, 144, 233},
       16,
       false,
       false,
       true},
      // Integer offsets with budgets per request, ALiBi and log-n scaling, three queries.
      {"b5_h4_hkv2_d64_q3_fibonacci_budgets_alibi_logn",
       5,
       4,
       2,
       64,
       400,
       3,
       {400, 3, 57, 150, 250},
       {16, 2, 40, 16, 100},
       {6, 6, 3, 0, 2},
       {21, 34, 55, 89, 144, 233},
       16,
       true,
       true},
      // Dense with ALiBi, ragged: the 1,100-key row is split over three blocks and merged.
      {"b2_h2_hkv1_d32_q1_dense_alibi_split",
       2,
       2,
       1,
       32,
       1100,
       1,
       {1100, 513},
       {},
       {},
       {},
       1100,
       true,
       false},
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

// Which implementation the op must pick for a case: SDPA for dense causal attention over one
// length, tensor ops for float64 and fractional offsets, else the CUDA kernel (where built).
DecodeAttentionPath expected_path(const DecodeCase& c, torch::ScalarType type) {
  bool one_length_dense = c.offsets.empty() && !c.alibi && !c.log_n && c.queries == 1;
  for (size_t b = 0; b < c.lengths.size(); ++b) {
    const int64_t window = c.windows.empty() ? c.window : c.windows[b];
    one_length_dense =
        one_length_dense && window >= c.lengths[b] && c.lengths[b] == c.lengths.front();
  }
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
  if (one_length_dense) return DecodeAttentionPath::cuda_sdpa;
#endif
  bool fractional = false;
  for (const double x : c.offsets) fractional = fractional || x != std::floor(x);
  if (type == torch::kFloat64 || fractional || !decode_attention_has_cuda_kernel()) {
    return DecodeAttentionPath::cuda_tensor_ops;
  }
  return DecodeAttentionPath::cuda_kernel;
}

std::string path_name(DecodeAttentionPath path) {
  switch (path) {
    case DecodeAttentionPath::cpu_kernel:
      return "the CPU kernel";
    case DecodeAttentionPath::cuda_kernel:
      return "the CUDA kernel";
    case DecodeAttentionPath::cuda_sdpa:
      return "SDPA";
    case DecodeAttentionPath::cuda_tensor_ops:
      return "tensor ops";
  }
  return "?";
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
  // Half the cases pass the step's lengths on the device, as the model does.
  DecodeLengths device_lengths;
  if (harness::seed_of(c.shape) % 2 == 0) {
    o.device_lengths = device_lengths.on(torch::Device(torch::kCUDA), c.lengths);
  }
  const auto got = decode_attention(q, k, v, c.lengths, o);
  if (got.path != expected_path(c, type)) {
    r.fail("ran " + path_name(got.path) + ", expected " + path_name(expected_path(c, type)));
  }

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
  // The form a step replayed from a CUDA graph takes: the capacity as every length's host bound,
  // the true lengths on the device alone; the same key sets, so the same bound.
  const auto path = expected_path(c, type);
  if (path == DecodeAttentionPath::cuda_kernel || path == DecodeAttentionPath::cuda_sdpa) {
    auto bounded = o;
    DecodeLengths true_lengths;
    bounded.device_lengths = true_lengths.on(torch::Device(torch::kCUDA), c.lengths);
    bounded.lengths_are_bounds = true;
    if (bounded.window >= *std::max_element(c.lengths.begin(), c.lengths.end()) &&
        c.windows.empty() && c.offsets.empty()) {
      bounded.window = c.capacity;  // dense: every key, whatever the length
    }
    const auto graph_form =
        decode_attention(q, k, v, std::vector<int64_t>(c.lengths.size(), c.capacity), bounded);
    if (graph_form.path != DecodeAttentionPath::cuda_kernel) {
      r.fail("lengths_are_bounds ran " + path_name(graph_form.path));
    }
    r.max_rel("out with the lengths as device values and host bounds",
              harness::host_values(graph_form.out), want.out, bound);
  }
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
  DecodeAttentionOptions short_lengths;
  short_lengths.device_lengths =
      torch::full({2}, 10, torch::dtype(torch::kInt).device(torch::kCUDA));
  expect_error(short_lengths, {10}, k, "device_lengths must be contiguous int32 [batch]");
  DecodeAttentionOptions bounds_alone;
  bounds_alone.lengths_are_bounds = true;
  expect_error(bounds_alone, {10}, k, "lengths_are_bounds needs device_lengths");
  r.lt("bad inputs accepted or not named (of 7)", wrong, 0.5);
  // DecodeLengths uploads again when the lengths change, not otherwise.
  DecodeLengths lengths;
  const auto first = lengths.on(torch::Device(torch::kCUDA), {5, 7});
  const auto same = lengths.on(torch::Device(torch::kCUDA), {5, 7});
  const auto next = lengths.on(torch::Device(torch::kCUDA), {6, 8});
  if (!first.is_same(same)) r.fail("DecodeLengths uploaded the same lengths twice");
  if (next.cpu().to(torch::kLong).data_ptr<int64_t>()[1] != 8) {
    r.fail("DecodeLengths kept stale lengths");
  }
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
