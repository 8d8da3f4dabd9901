// The CUDA decode kernel (kernels/cuda/decode_attention.hpp) against the float64 reference
// (kernels/cpu/reference_decode_attention.hpp, written from the contract) on random inputs,
// never zeros: op harness cases on backend "cuda", which skip without a GPU. Every family the
// kernel takes (window, dilated Fibonacci and power-of-2 with integer offsets, dense causal, one
// query and several per request), R = 1..5 requests of different lengths (1, shorter than the
// window, at the capacity), GQA (groups of 1, 2, 4 and 16: more query heads than one block
// takes), per-request windows and rungs, ALiBi, log-n scaling, head_dim 20 .. 256 (16-byte and
// element-wise key loads), and dense rows long enough to be split over several blocks and merged
// (1,500 and 70,000 keys). Long dense cases compare with the float64 CPU kernel
// (kernels/cpu/decode_attention.hpp, itself equal to the reference within 1e-12 in
// decode_attention_cpu_test): the reference is O(slots * length * d) per query by design.
//
// Error rule (ref in float64 on the same, rounded, inputs):
//  * float32: max |out - ref| / max |ref| < 1e-5. Scores, softmax and the value sums are float32
//    (eps 6e-8) over <= 512 slots per block of d <= 256 terms, merged over <= 137 splits: a few
//    hundred ulps at worst. An indexing, masking or budget slip is O(1).
//  * bfloat16 (inputs rounded to bf16): out within the harness's bf16 rule (rel. L2 <= 2x what
//    rounding the float64 result to bf16 costs + 1e-4; the kernel reads bf16 exactly and rounds
//    once at the end), and max_rel < 4e-3 as the op's test (half a bf16 ulp, 2^-9 of the
//    largest value, plus the float32 arithmetic, which can move an element's rounding by one
//    more half ulp).
// Every output buffer starts as NaN (0xFF bytes), so a row the kernel did not write fails.
// A device length outside the host bound must turn that query's rows to NaN and leave the
// others exact. The host-side checks (bad shapes, fractional or unordered offsets, missing
// pointers) are a CPU case: decode_attention_launch_host.f32_args_errors.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/decode_attention.hpp"
#include "kernels/cpu/reference_decode_attention.hpp"
#include "kernels/cuda/decode_attention.hpp"
#include "tests/kernels/harness.hpp"

namespace reach::harness {
namespace {

using kernels::DecodeAttentionParams;
using kernels::gpu::DecodeAttentionCudaArgs;

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
  }
}

bool cuda_device_available() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

uint16_t to_bf16_bits(double x) {  // x is already a bf16 value: the top half of its float
  const auto f = static_cast<float>(x);
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>(u >> 16);
}

double from_bf16_bits(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// A device buffer of bf16, float32, float64 or int32 elements, NaN-poisoned (0xFF bytes).
class DeviceBuffer {
 public:
  enum Kind { kBf16, kF32, kF64, kI32 };
  DeviceBuffer(size_t count, Kind kind) : count_(count), kind_(kind) {
    check(cudaMalloc(&ptr_, bytes() + 16), "cudaMalloc");
    check(cudaMemset(ptr_, 0xFF, bytes() + 16), "cudaMemset");
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr_); }
  void* get() const { return ptr_; }
  size_t bytes() const { return count_ * (kind_ == kBf16 ? 2 : (kind_ == kF64 ? 8 : 4)); }
  void upload(const std::vector<double>& x) {
    if (kind_ == kBf16) {
      std::vector<uint16_t> h(count_);
      for (size_t t = 0; t < count_; ++t) h[t] = to_bf16_bits(x[t]);
      copy_in(h.data());
    } else if (kind_ == kF32) {
      const std::vector<float> h(x.begin(), x.end());
      copy_in(h.data());
    } else if (kind_ == kF64) {
      copy_in(x.data());
    } else {
      std::vector<int32_t> h(count_);
      for (size_t t = 0; t < count_; ++t) h[t] = static_cast<int32_t>(x[t]);
      copy_in(h.data());
    }
  }
  std::vector<double> download() const {
    std::vector<double> x(count_);
    if (kind_ == kBf16) {
      std::vector<uint16_t> h(count_);
      copy_out(h.data());
      for (size_t t = 0; t < count_; ++t) x[t] = from_bf16_bits(h[t]);
    } else {
      std::vector<float> h(count_);
      copy_out(h.data());
      for (size_t t = 0; t < count_; ++t) x[t] = h[t];
    }
    return x;
  }

 private:
  void copy_in(const void* h) {
    check(cudaMemcpy(ptr_, h, bytes(), cudaMemcpyHostToDevice), "upload");
  }
  void copy_out(void* h) const {
    check(cudaMemcpy(h, ptr_, bytes(), cudaMemcpyDeviceToHost), "download");
  }
  void* ptr_ = nullptr;
  size_t count_;
  Kind kind_;
};

struct DecodeCudaCase {
  std::string shape;
  int64_t heads, kv_heads, d, capacity, queries;
  std::vector<int64_t> lengths, windows, rungs;  // windows, rungs: empty = the layer's
  std::vector<double> offsets;
  int64_t window;
  bool alibi = false, log_n = false;
  int64_t batch() const { return static_cast<int64_t>(lengths.size()); }
};

std::vector<DecodeCudaCase> cases() {
  const std::vector<double> fibonacci{21, 34, 55, 89, 144, 233};
  const std::vector<double> power2{8, 16, 32, 64, 128, 256};
  std::vector<DecodeCudaCase> c;
  // Window: R = 5, lengths 1 and shorter than the window, GQA group 4.
  c.push_back({"window_r5_h8_hkv2_d64", 8, 2, 64, 200, 1, {1, 7, 16, 40, 200}, {}, {}, {}, 16});
  // Dilated Fibonacci (the model's integer offsets): R = 5, offsets appearing one by one.
  c.push_back({"fibonacci_r5_h4_hkv1_d128",
               4,
               1,
               128,
               320,
               1,
               {1, 20, 60, 150, 320},
               {},
               {},
               fibonacci,
               16});
  // Power-of-2 offsets, no GQA, head_dim 64.
  c.push_back({"power2_r4_h4_hkv4_d64", 4, 4, 64, 300, 1, {3, 9, 129, 300}, {}, {}, power2, 8});
  // R = 1 and R = 2.
  c.push_back({"fibonacci_r1_h2_hkv1_d64", 2, 1, 64, 500, 1, {500}, {}, {}, fibonacci, 16});
  c.push_back({"window_r2_h4_hkv2_d128", 4, 2, 128, 90, 1, {90, 2}, {}, {}, {}, 32});
  // 16 query heads on one KV head: two blocks of 8 heads per query.
  c.push_back(
      {"fibonacci_r3_h16_hkv1_d64", 16, 1, 64, 260, 1, {260, 1, 33}, {}, {}, fibonacci, 16});
  // Budgets per request (windows widened past offsets drop them; rungs cut the list), ALiBi and
  // log-n scaling (SSMax / NAPE), three queries per request.
  DecodeCudaCase budgets{"budgets_alibi_logn_q3_r5_h4_hkv2_d64",
                         4,
                         2,
                         64,
                         400,
                         3,
                         {400, 3, 57, 150, 250},
                         {16, 2, 40, 16, 100},
                         {6, 6, 3, 0, 2},
                         fibonacci,
                         16};
  budgets.alibi = budgets.log_n = true;
  c.push_back(budgets);
  // Odd head dims: 48 and 24 (16-byte rows), 20 (element-wise key loads), 256 (the largest).
  c.push_back({"fibonacci_r3_h2_hkv1_d48", 2, 1, 48, 240, 1, {240, 5, 100}, {}, {}, fibonacci, 16});
  c.push_back({"window_r2_h2_hkv2_d24", 2, 2, 24, 64, 2, {64, 2}, {}, {}, {}, 16});
  c.push_back({"fibonacci_r2_h2_hkv1_d20", 2, 1, 20, 200, 1, {200, 30}, {}, {}, fibonacci, 16});
  c.push_back({"fibonacci_r2_h4_hkv2_d256", 4, 2, 256, 300, 1, {300, 17}, {}, {}, fibonacci, 16});
  // Dense causal (W >= every length), ragged: the 1,500-key row is split over 3 blocks and
  // merged, the others fit one block.
  c.push_back(
      {"dense_ragged_r3_h8_hkv2_d128", 8, 2, 128, 1500, 1, {1, 700, 1500}, {}, {}, {}, 1500});
  DecodeCudaCase dense_alibi{
      "dense_alibi_q2_r2_h4_hkv1_d64", 4, 1, 64, 1100, 2, {1100, 513}, {}, {}, {}, 1100};
  dense_alibi.alibi = true;
  c.push_back(dense_alibi);
  // One request at 70,000 keys: 137 splits.
  c.push_back({"dense_r1_h4_hkv1_d64_n70000", 4, 1, 64, 70000, 1, {70000}, {}, {}, {}, 70000});
  return c;
}

std::vector<double> per_head(double first, double step, int64_t heads) {
  std::vector<double> x;
  for (int64_t h = 0; h < heads; ++h) x.push_back(first + step * static_cast<double>(h));
  return x;
}

struct Inputs {
  std::vector<double> q, k, v, slopes, delta, beta, gamma;
};

Inputs make_inputs(const DecodeCudaCase& c, bool bf16) {
  Rng rng(seed_of(c.shape));
  Inputs in;
  in.q = rng.normal(static_cast<size_t>(c.batch() * c.heads * c.queries * c.d));
  in.k = rng.normal(static_cast<size_t>(c.batch() * c.kv_heads * c.capacity * c.d));
  in.v = rng.normal(static_cast<size_t>(c.batch() * c.kv_heads * c.capacity * c.d));
  if (bf16) {
    in.q = round_bf16(in.q);
    in.k = round_bf16(in.k);
    in.v = round_bf16(in.v);
  }
  in.slopes = per_head(0.02, 0.03, c.heads);
  in.delta = per_head(0.5, 0.1, c.heads);
  in.beta = per_head(0.2, 0.05, c.heads);
  in.gamma = per_head(0.4, 0.1, c.heads);
  return in;
}

// The contract's host form of the case, for the references.
DecodeAttentionParams host_params(const DecodeCudaCase& c, const Inputs& in) {
  DecodeAttentionParams p;
  p.batch = c.batch();
  p.heads = c.heads;
  p.kv_heads = c.kv_heads;
  p.head_dim = c.d;
  p.capacity = c.capacity;
  p.lengths = c.lengths.data();
  p.queries = c.queries;
  p.window = c.window;
  p.offsets = c.offsets.data();
  p.num_offsets = static_cast<int64_t>(c.offsets.size());
  p.scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  p.windows = c.windows.empty() ? nullptr : c.windows.data();
  p.rung_limits = c.rungs.empty() ? nullptr : c.rungs.data();
  p.alibi_slopes = c.alibi ? in.slopes.data() : nullptr;
  p.log_n_scaling = c.log_n;
  p.delta = c.log_n ? in.delta.data() : nullptr;
  p.beta = c.log_n ? in.beta.data() : nullptr;
  p.gamma = c.log_n ? in.gamma.data() : nullptr;
  return p;
}

// The float64 reference, or for long rows the float64 CPU kernel (the reference costs
// O(slots * length * d) per query).
std::vector<double> expected(const DecodeAttentionParams& p, const Inputs& in) {
  double work = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    const auto n = static_cast<double>(p.lengths[b]);
    work += n * std::min(n, static_cast<double>(p.window_of(b)) + 64.0);
  }
  if (work * static_cast<double>(p.heads * p.head_dim * p.queries) < 4e8) {
    return kernels::reference::decode_forward(p, in.q, in.k, in.v).out;
  }
  std::vector<double> out(in.q.size());
  kernels::decode_attention_cpu<double>(p, in.q.data(), in.k.data(), in.v.data(), out.data(),
                                        nullptr);
  return out;
}

std::vector<double> as_doubles(const std::vector<int64_t>& x) {
  return std::vector<double>(x.begin(), x.end());
}

// Runs the kernel on the case; `device_lengths` replaces the lengths the device sees (the
// host bound stays the case's longest length).
std::vector<double> run_kernel(const DecodeCudaCase& c, const Inputs& in, bool bf16,
                               const std::vector<int64_t>& device_lengths) {
  const auto kind = bf16 ? DeviceBuffer::kBf16 : DeviceBuffer::kF32;
  DeviceBuffer q(in.q.size(), kind), k(in.k.size(), kind), v(in.v.size(), kind),
      out(in.q.size(), kind);
  q.upload(in.q);
  k.upload(in.k);
  v.upload(in.v);
  const auto r = static_cast<size_t>(c.batch()), h = static_cast<size_t>(c.heads);
  DeviceBuffer lengths(r, DeviceBuffer::kI32), windows(r, DeviceBuffer::kI32),
      rungs(r, DeviceBuffer::kI32);
  lengths.upload(as_doubles(device_lengths));
  DeviceBuffer slopes(h, DeviceBuffer::kF64), delta(h, DeviceBuffer::kF64),
      beta(h, DeviceBuffer::kF64), gamma(h, DeviceBuffer::kF64);
  slopes.upload(in.slopes);
  delta.upload(in.delta);
  beta.upload(in.beta);
  gamma.upload(in.gamma);

  DecodeAttentionCudaArgs a;
  a.batch = c.batch();
  a.heads = c.heads;
  a.kv_heads = c.kv_heads;
  a.head_dim = c.d;
  a.capacity = c.capacity;
  a.queries = c.queries;
  a.lengths = static_cast<const int32_t*>(lengths.get());
  a.max_length = *std::max_element(c.lengths.begin(), c.lengths.end());
  a.window = c.window;
  if (!c.windows.empty()) {
    windows.upload(as_doubles(c.windows));
    a.windows = static_cast<const int32_t*>(windows.get());
    a.max_window = *std::max_element(c.windows.begin(), c.windows.end());
  }
  if (!c.rungs.empty()) {
    rungs.upload(as_doubles(c.rungs));
    a.rung_limits = static_cast<const int32_t*>(rungs.get());
  }
  a.offsets = c.offsets.data();
  a.num_offsets = static_cast<int64_t>(c.offsets.size());
  a.scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  a.alibi_slopes = c.alibi ? static_cast<const double*>(slopes.get()) : nullptr;
  a.log_n_scaling = c.log_n;
  a.delta = static_cast<const double*>(delta.get());
  a.beta = static_cast<const double*>(beta.get());
  a.gamma = static_cast<const double*>(gamma.get());
  const size_t workspace_bytes = kernels::gpu::decode_attention_workspace_bytes(a);
  DeviceBuffer workspace(std::max<size_t>(workspace_bytes / 4, 1), DeviceBuffer::kF32);
  kernels::gpu::decode_attention_forward_cuda(
      a, bf16 ? kernels::gpu::ScalarType::kBFloat16 : kernels::gpu::ScalarType::kFloat32, q.get(),
      k.get(), v.get(), out.get(), workspace_bytes > 0 ? workspace.get() : nullptr, nullptr);
  check(cudaDeviceSynchronize(), "decode kernel");
  return out.download();
}

void check_case(const DecodeCudaCase& c, bool bf16, Report& r) {
  if (!cuda_device_available()) return r.skip("no CUDA device");
  const Inputs in = make_inputs(c, bf16);
  const auto want = expected(host_params(c, in), in);
  const auto got = run_kernel(c, in, bf16, c.lengths);
  if (bf16) {
    r.bf16("out vs the float64 reference (bf16 rule)", got, want);
    r.max_rel("out vs the float64 reference (max rel)", got, want, 4e-3);
  } else {
    r.max_rel("out vs the float64 reference", got, want, 1e-5);
  }
}

// Request 1's device length beyond the host bound: its rows are NaN, the others exact.
void check_out_of_contract_length(Report& r) {
  if (!cuda_device_available()) return r.skip("no CUDA device");
  const DecodeCudaCase c{"poison", 2, 1, 64, 100, 1, {50, 40}, {}, {}, {21, 34}, 16};
  const Inputs in = make_inputs(c, false);
  const auto want = expected(host_params(c, in), in);
  const auto got = run_kernel(c, in, false, {50, 60});  // 60 > max_length 50
  const auto half = got.size() / 2;
  const std::vector<double> first(got.begin(), got.begin() + static_cast<int64_t>(half));
  r.max_rel("request 0 unaffected", first,
            std::vector<double>(want.begin(), want.begin() + static_cast<int64_t>(half)), 1e-5);
  const bool all_nan = std::all_of(got.begin() + static_cast<int64_t>(half), got.end(),
                                   [](double x) { return std::isnan(x); });
  r.lt("request 1 (length 60 > bound 50) not all NaN", all_nan ? 0.0 : 1.0, 0.5);
}

// Host-side refusals, each naming the problem (no GPU needed).
void check_args_errors(Report& r) {
  const int32_t fake_lengths = 0;  // never read: validation is host-only
  const std::vector<double> fibonacci{21, 34}, fractional{21, 34.5}, unordered{34, 21};
  auto base = [&] {
    DecodeAttentionCudaArgs a;
    a.batch = 2;
    a.heads = 4;
    a.kv_heads = 2;
    a.head_dim = 64;
    a.capacity = 100;
    a.lengths = &fake_lengths;
    a.max_length = 100;
    a.window = 16;
    a.offsets = fibonacci.data();
    a.num_offsets = 2;
    return a;
  };
  int wrong = 0;
  auto expect = [&](const DecodeAttentionCudaArgs& a, const std::string& words) {
    const std::string problem = kernels::gpu::decode_cuda_support_problem(a);
    if (problem.find(words) == std::string::npos) {
      r.fail("expected a problem naming '" + words + "', got '" + problem + "'");
      ++wrong;
    }
  };
  if (!kernels::gpu::decode_cuda_support_problem(base()).empty()) {
    r.fail("valid args refused: " + kernels::gpu::decode_cuda_support_problem(base()));
    ++wrong;
  }
  auto a = base();
  a.offsets = fractional.data();
  expect(a, "is not an integer");
  a = base();
  a.offsets = unordered.data();
  expect(a, "strictly increasing");
  a = base();
  a.kv_heads = 3;
  expect(a, "must be >= 1 and divide heads");
  a = base();
  a.head_dim = 300;
  expect(a, "head_dim must be in 1..256");
  a = base();
  a.max_length = 101;
  expect(a, "max_length (101) must be in");
  a = base();
  a.lengths = nullptr;
  expect(a, "lengths pointer is null");
  a = base();
  a.window = 40;
  expect(a, "must be in W = 40");
  a = base();
  a.windows = &fake_lengths;
  expect(a, "per-request windows need max_window");
  a = base();
  a.num_offsets = 65;
  expect(a, "at most 64 offsets");
  a = base();
  a.log_n_scaling = true;
  expect(a, "needs delta, beta and gamma");
  a = base();
  a.scale = 0.0;
  expect(a, "scale must be a positive");
  r.lt("bad args accepted or not named (of 11)", wrong, 0.5);
  // The launcher refuses the same args before touching the device.
  try {
    auto bad = base();
    bad.offsets = fractional.data();
    kernels::gpu::decode_attention_forward_cuda(bad, kernels::gpu::ScalarType::kFloat32, nullptr,
                                                nullptr, nullptr, nullptr, nullptr, nullptr);
    r.fail("the launcher accepted a fractional offset");
  } catch (const std::invalid_argument& e) {
    if (std::string(e.what()).find("is not an integer") == std::string::npos) {
      r.fail(std::string("launcher error lacks the reason: ") + e.what());
    }
  }
}

REACH_OP_CASES(decode_attention_cuda_cases) {
  for (const auto& c : cases()) {
    for (const bool bf16 : {false, true}) {
      registry.add({"decode_attention", "cuda", bf16 ? "bf16" : "f32", c.shape, "vs_reference",
                    [c, bf16](Report& r) { check_case(c, bf16, r); }});
    }
  }
  registry.add({"decode_attention", "cuda", "f32", "r2_length_beyond_bound", "nan_rows",
                check_out_of_contract_length});
  registry.add({"decode_attention_launch", "host", "f32", "args", "errors", check_args_errors});
}

}  // namespace
}  // namespace reach::harness
