// The CUDA dilated-attention kernels against the float64 CPU reference, on random inputs: op
// harness cases (tests/kernels/harness.hpp) on backend "cuda", which skip without a GPU. The
// same cases run under GoogleTest (kernels_cuda_test, ctest label gpu) and in the standalone
// table of tests/kernels/cuda_accuracy_check.cpp.
//
// Error rule (relative L2, ||x - ref|| / ||ref||, ref in float64 on the same inputs):
//  * float32: out, dq, dk, dv within 1e-4 and the offset gradient within 1e-3. The
//    kernels accumulate at most W + K (forward) or a few hundred (backward) float32
//    terms per element, eps 6e-8, so 1e-4 leaves a wide margin; the offset gradient
//    sums ~n * BH signed terms in float32 per block before a float64 reduction.
//  * bfloat16 (inputs rounded to bf16, ref on the rounded inputs): each output within
//    2x the error of the same computation done in bf16 by the reference, i.e. the
//    float64 result rounded to bf16 (FlashAttention's rule), plus 1e-4 of slack for
//    tensors whose bf16 rounding error is tiny (harness::Bf16Rule). The offset gradient (a
//    float64 output, so no rounding to compare with) within 1e-2: it is computed from bf16
//    inputs and the bf16-rounded forward output (rel. error 2^-9 ~ 2e-3 per term).
// Every output buffer is poisoned with NaN first, so an unwritten element fails the case.
//
// The shapes: n from 1 to 70,000, odd sizes, bf16 and float32, d 64 and 128, integer and
// fractional offsets, W >= n (dense causal), W = 1 and W spanning several 64-row chunks. bf16
// cases with integer offsets run the tensor-core path (shapes end in "tc") for the forward and
// the backward without the offset gradient; the backward with the offset gradient always runs
// the CUDA-core path. Both backwards are checked.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "kernels/cpu/dilated_attention.hpp"
#include "kernels/cpu/reference_attention.hpp"
#include "kernels/cuda/dilated_attention.hpp"
#include "pattern/dilated_offsets.hpp"
#include "tests/kernels/harness.hpp"

namespace reach::harness {
namespace {

using kernels::DilatedAttentionParams;

struct CudaCase {
  bool bf16 = false;
  int batch_heads = 1;
  int seq_len = 1;
  int head_dim = 64;
  int window = 1;
  std::vector<double> offsets;
  int group = 1;  // query heads per K/V head (grouped-query attention)

  DilatedAttentionParams params() const {
    DilatedAttentionParams p;
    p.batch_heads = batch_heads;
    p.seq_len = seq_len;
    p.head_dim = head_dim;
    p.window = window;
    p.offsets = offsets.data();
    p.num_offsets = static_cast<int64_t>(offsets.size());
    p.scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
    p.kv_group = group;
    return p;
  }
  kernels::gpu::ScalarType type() const {
    return bf16 ? kernels::gpu::ScalarType::kBFloat16 : kernels::gpu::ScalarType::kFloat32;
  }
  std::string shape() const {
    bool fractional = false;
    for (const double x : offsets) fractional |= x != std::floor(x);
    const auto p = params();
    std::string name =
        shape_part("bh", batch_heads) + "_" + shape_part("n", seq_len) + "_" +
        shape_part("d", head_dim) + "_" + shape_part("W", window) + "_" +
        shape_part("K", double(offsets.size())) + (fractional ? "_frac" : "") +
        (kernels::gpu::dilated_attention_uses_tensor_cores(p, type(), false) ? "_tc" : "");
    if (group > 1) name.append("_").append(shape_part("gqa", group));
    return name;
  }
};

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
  }
}

uint16_t to_bf16_bits(float x) {  // round to nearest even (inputs are finite)
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

double from_bf16_bits(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// A device buffer holding a host vector in bf16 or float32.
struct DeviceTensor {
  void* ptr = nullptr;
  size_t count = 0;
  bool bf16 = false;
  DeviceTensor(size_t n, bool is_bf16) : count(n), bf16(is_bf16) {
    check(cudaMalloc(&ptr, n * (bf16 ? 2 : 4)), "cudaMalloc");
    poison();
  }
  void poison() { check(cudaMemset(ptr, 0xFF, count * (bf16 ? 2 : 4)), "cudaMemset"); }  // NaN
  DeviceTensor(const DeviceTensor&) = delete;
  DeviceTensor& operator=(const DeviceTensor&) = delete;
  ~DeviceTensor() { cudaFree(ptr); }
  void upload(const std::vector<double>& x) {
    if (bf16) {
      std::vector<uint16_t> h(count);
      for (size_t t = 0; t < count; ++t) h[t] = to_bf16_bits(static_cast<float>(x[t]));
      check(cudaMemcpy(ptr, h.data(), count * 2, cudaMemcpyHostToDevice), "upload");
    } else {
      std::vector<float> h(x.begin(), x.end());
      check(cudaMemcpy(ptr, h.data(), count * 4, cudaMemcpyHostToDevice), "upload");
    }
  }
  std::vector<double> download() const {
    std::vector<double> x(count);
    if (bf16) {
      std::vector<uint16_t> h(count);
      check(cudaMemcpy(h.data(), ptr, count * 2, cudaMemcpyDeviceToHost), "download");
      for (size_t t = 0; t < count; ++t) x[t] = from_bf16_bits(h[t]);
    } else {
      std::vector<float> h(count);
      check(cudaMemcpy(h.data(), ptr, count * 4, cudaMemcpyDeviceToHost), "download");
      for (size_t t = 0; t < count; ++t) x[t] = h[t];
    }
    return x;
  }
};

// Raw device bytes, NaN-poisoned (0xFF bytes).
struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) {
    check(cudaMalloc(&ptr, bytes), "cudaMalloc");
    check(cudaMemset(ptr, 0xFF, bytes), "cudaMemset");
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr);
  }
};

bool all_finite(const std::vector<double>& x) {
  return std::all_of(x.begin(), x.end(), [](double v) { return std::isfinite(v); });
}

bool cuda_device_available() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

// Fibonacci offsets W <= d <= R (alpha 1), from pattern/.
std::vector<double> fibonacci_offsets(int64_t window, int64_t reach) {
  const auto ints = pattern::integer_offsets({pattern::OffsetBase::fibonacci, 1.0, window, reach});
  return std::vector<double>(ints.begin(), ints.end());
}

std::vector<CudaCase> cuda_cases() {
  std::vector<CudaCase> cases;
  const std::vector<double> fractional = {9.5, 13.25, 21.7, 40.01, 64.99};
  for (bool bf16 : {false, true}) {
    cases.push_back({bf16, 2, 1, 64, 4, {}});
    cases.push_back({bf16, 3, 17, 64, 4, {5, 8, 13}});
    cases.push_back({bf16, 1, 50, 64, 64, {}});  // W >= n: dense causal
    cases.push_back({bf16, 2, 257, 64, 16, fibonacci_offsets(16, 257)});
    cases.push_back({bf16, 2, 300, 64, 8, fractional});
    cases.push_back({bf16, 1, 1001, 64, 64, fibonacci_offsets(64, 1001)});
    cases.push_back({bf16, 2, 513, 128, 32, {34.5, 55, 89.3, 144, 233.75}});
    cases.push_back({bf16, 1, 4099, 128, 64, fibonacci_offsets(64, 4096)});
    // Band shapes for the tensor-core path: W = 1, W not a multiple of 64 spanning
    // several key chunks, dense causal over many chunks, n below one tile.
    cases.push_back({bf16, 3, 63, 64, 1, fibonacci_offsets(1, 55)});
    cases.push_back({bf16, 2, 1003, 64, 200, {233, 377, 610, 987}});
    cases.push_back({bf16, 1, 700, 64, 1024, {}});
    cases.push_back({bf16, 2, 1000, 128, 100, {144, 233, 377, 610, 987}});
    cases.push_back({bf16, 40, 130, 64, 64, fibonacci_offsets(64, 130)});
    // Grouped-query attention (the paper's 8 query heads over 2 K/V heads, and 2 over 1),
    // integer offsets (tensor cores in bf16) and fractional ones (CUDA cores).
    cases.push_back({bf16, 16, 777, 64, 12, fibonacci_offsets(12, 777), 4});
    cases.push_back({bf16, 4, 300, 128, 8, fractional, 2});
    cases.push_back({bf16, 8, 200, 64, 256, {}, 4});  // dense causal
  }
  // Long sequences: the reference is the CPU fast kernel in float64 (itself tested
  // against the dense reference), so every row is still checked.
  cases.push_back({true, 1, 70000, 64, 64, fibonacci_offsets(64, 70000)});
  cases.push_back({false, 2, 20001, 128, 64, {89.5, 144, 233.2, 377, 610, 987.9, 1597}});
  cases.push_back({true, 3, 9999, 64, 64, {100.5, 1000.25, 5000.75}});
  return cases;
}

// Runs one case: forward, then the backward without and (when there are offsets) with the
// offset gradient; dq, dk, dv errors are the larger of the two backwards.
void run_cuda_case(const CudaCase& c, const std::string& name, Report& r) {
  if (!cuda_device_available()) return r.skip("no CUDA device");
  const auto p = c.params();
  const size_t count = static_cast<size_t>(c.batch_heads) * c.seq_len * c.head_dim;
  const size_t kv_count = count / static_cast<size_t>(c.group);
  const size_t rows = static_cast<size_t>(c.batch_heads) * c.seq_len;
  const size_t K = c.offsets.size();

  Rng rng(seed_of(name));
  auto draw = [&](size_t size) { return c.bf16 ? round_bf16(rng.normal(size)) : rng.normal(size); };
  const auto q = draw(count), k = draw(kv_count), v = draw(kv_count), grad_out = draw(count);
  // The kernel writes dK, dV per query head; a K/V head's gradient is its group's sum.
  auto group_sum = [&](const std::vector<double>& per_query_head) {
    if (c.group == 1) return per_query_head;
    std::vector<double> sum(kv_count, 0.0);
    const size_t head = static_cast<size_t>(c.seq_len) * c.head_dim;
    for (size_t x = 0; x < count; ++x) {
      sum[(x / head) / c.group * head + x % head] += per_query_head[x];
    }
    return sum;
  };

  // float64 reference: dense O(n^2) for short sequences, the CPU kernel for long.
  std::vector<double> ref_out, ref_dq, ref_dk, ref_dv, ref_doff(K), ref_doff_magnitude;
  if (static_cast<int64_t>(c.seq_len) <= 1100) {
    ref_out = kernels::reference::forward(p, q, k, v);
    auto g = kernels::reference::backward(p, q, k, v, grad_out);
    ref_dq = std::move(g.q);
    ref_dk = std::move(g.k);
    ref_dv = std::move(g.v);
    ref_doff = std::move(g.offsets);
    ref_doff_magnitude = std::move(g.offsets_magnitude);
  } else {
    ref_out.resize(count);
    std::vector<double> lse(rows);
    kernels::dilated_attention_forward_cpu<double>(p, q.data(), k.data(), v.data(), ref_out.data(),
                                                   lse.data());
    ref_dq.resize(count);
    ref_dk.resize(kv_count);
    ref_dv.resize(kv_count);
    kernels::dilated_attention_backward_cpu<double>(
        p, q.data(), k.data(), v.data(), ref_out.data(), lse.data(), grad_out.data(), ref_dq.data(),
        ref_dk.data(), ref_dv.data(), K ? ref_doff.data() : nullptr);
  }

  DeviceTensor dq_in(count, c.bf16), dk_in(kv_count, c.bf16), dv_in(kv_count, c.bf16);
  DeviceTensor d_do(count, c.bf16), d_out(count, c.bf16);
  DeviceTensor d_gq(count, c.bf16), d_gk(count, c.bf16), d_gv(count, c.bf16);
  dq_in.upload(q);
  dk_in.upload(k);
  dv_in.upload(v);
  d_do.upload(grad_out);
  DeviceBuffer lse(rows * sizeof(float)), doff((K + 1) * sizeof(double));
  const size_t ws_bytes = kernels::gpu::dilated_attention_backward_workspace_bytes(p);
  DeviceBuffer workspace(ws_bytes + 16);
  const auto type = c.type();
  kernels::gpu::dilated_attention_forward_cuda(p, type, dq_in.ptr, dk_in.ptr, dv_in.ptr, d_out.ptr,
                                               lse.as<float>(), nullptr);
  check(cudaDeviceSynchronize(), "forward");
  const auto out = d_out.download();
  bool all_written = all_finite(out);
  double err_dq = 0, err_dk = 0, err_dv = 0, err_doff = 0, err_doff_per_term = 0;
  // The backward twice: without the offset gradient and, when there are offsets, with
  // it (bf16 at d = 64: the tensor cores' two-row variant; d = 128 and fp32: the CUDA
  // cores). The outputs are poisoned again before each run.
  for (const bool offsets_grad : {false, true}) {
    if (offsets_grad && K == 0) break;
    for (DeviceTensor* t : {&d_gq, &d_gk, &d_gv}) t->poison();
    kernels::gpu::dilated_attention_backward_cuda(
        p, type, dq_in.ptr, dk_in.ptr, dv_in.ptr, d_out.ptr, lse.as<float>(), d_do.ptr, d_gq.ptr,
        d_gk.ptr, d_gv.ptr, offsets_grad ? doff.as<double>() : nullptr, workspace.ptr, nullptr);
    check(cudaDeviceSynchronize(), "backward");
    const auto gq = d_gq.download(), gk = group_sum(d_gk.download()),
               gv = group_sum(d_gv.download());
    all_written = all_written && all_finite(gq) && all_finite(gk) && all_finite(gv);
    err_dq = std::max(err_dq, rel_l2_error(gq, ref_dq));
    err_dk = std::max(err_dk, rel_l2_error(gk, ref_dk));
    err_dv = std::max(err_dv, rel_l2_error(gv, ref_dv));
    if (offsets_grad) {
      std::vector<double> goff(K);
      check(cudaMemcpy(goff.data(), doff.ptr, K * sizeof(double), cudaMemcpyDeviceToHost),
            "download");
      all_written = all_written && all_finite(goff);
      err_doff = rel_l2_error(goff, ref_doff);
      for (size_t j = 0; j < ref_doff_magnitude.size(); ++j) {
        err_doff_per_term = std::max(err_doff_per_term, std::abs(goff[j] - ref_doff[j]) /
                                                            std::max(ref_doff_magnitude[j], 1e-30));
      }
    }
  }
  if (!all_written) r.fail("an output element was left unwritten (NaN poison) or is not finite");
  const Bf16Rule rule;  // 2x bf16 rounding + 1e-4
  r.lt("out rel-L2", rel_l2_error(out, ref_out), c.bf16 ? rule.bound(ref_out) : 1e-4);
  r.lt("dq rel-L2", err_dq, c.bf16 ? rule.bound(ref_dq) : 1e-4);
  r.lt("dk rel-L2", err_dk, c.bf16 ? rule.bound(ref_dk) : 1e-4);
  r.lt("dv rel-L2", err_dv, c.bf16 ? rule.bound(ref_dv) : 1e-4);
  // An offset's gradient is a sum over every query row (and head) of terms of both signs, which
  // can cancel to far below the terms' size; bf16 rounding errs relative to the terms (one
  // rounding of P and dS each, unit roundoff 2^-8), not to their sum. So in bf16, where the
  // float64 reference gives the terms' absolute sum, the error is bounded by 2 x 2^-8 of it
  // (random-signed rounding errors sum to ~2^-8 / sqrt(terms) of it, so there is margin; a
  // wrong sign, key row or interpolation weight in over ~1% of the terms' mass fails it);
  // otherwise rel-L2 as before.
  if (K > 0 && c.bf16 && !ref_doff_magnitude.empty()) {
    r.lt("doffsets error / terms' absolute sum", err_doff_per_term, 2.0 / 256);
  } else if (K > 0) {
    r.lt("doffsets rel-L2", err_doff, c.bf16 ? 1e-2 : 1e-3);
  }
}

REACH_OP_CASES(dilated_attention_cuda_cases) {
  for (const auto& c : cuda_cases()) {
    OpCase oc{"dilated_attention", "cuda", c.bf16 ? "bf16" : "f32", c.shape(), "fwd_bwd", {}};
    const std::string name = oc.name();
    oc.run = [c, name](Report& r) { run_cuda_case(c, name, r); };
    registry.add(std::move(oc));
  }
}

}  // namespace
}  // namespace reach::harness
