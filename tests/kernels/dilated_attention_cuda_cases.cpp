#include "tests/kernels/dilated_attention_cuda_cases.hpp"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <stdexcept>

#include "kernels/cpu/dilated_attention.hpp"
#include "kernels/cpu/reference_attention.hpp"
#include "kernels/cuda/dilated_attention.hpp"

namespace reach::tests {
namespace {

using kernels::DilatedAttentionParams;

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

double round_bf16(double x) { return from_bf16_bits(to_bf16_bits(static_cast<float>(x))); }

double rel_l2(const std::vector<double>& x, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t t = 0; t < x.size(); ++t) {
    num += (x[t] - ref[t]) * (x[t] - ref[t]);
    den += ref[t] * ref[t];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

double bf16_rounding_error(const std::vector<double>& ref) {
  std::vector<double> r(ref.size());
  for (size_t t = 0; t < ref.size(); ++t) r[t] = round_bf16(ref[t]);
  return rel_l2(r, ref);
}

// A device buffer holding a host vector in bf16 or float32.
struct DeviceTensor {
  void* ptr = nullptr;
  size_t count = 0;
  bool bf16 = false;
  DeviceTensor(size_t n, bool is_bf16) : count(n), bf16(is_bf16) {
    check(cudaMalloc(&ptr, n * (bf16 ? 2 : 4)), "cudaMalloc");
    check(cudaMemset(ptr, 0xFF, n * (bf16 ? 2 : 4)), "cudaMemset");  // NaN poison
  }
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

bool all_finite(const std::vector<double>& x) {
  for (double v : x) {
    if (!std::isfinite(v)) return false;
  }
  return true;
}

std::string case_name(const CudaCase& c) {
  std::ostringstream s;
  s << (c.bf16 ? "bf16" : "fp32") << " bh=" << c.batch_heads << " n=" << c.seq_len
    << " d=" << c.head_dim << " W=" << c.window << " K=" << c.offsets.size();
  bool fractional = false;
  for (double x : c.offsets) fractional |= x != std::floor(x);
  if (fractional) s << " frac";
  return s.str();
}

std::vector<double> fibonacci_offsets(int64_t window, int64_t reach) {
  std::vector<double> out;
  int64_t a = 1, b = 2;
  while (b <= reach) {
    if (b >= window) out.push_back(static_cast<double>(b));
    const int64_t c = a + b;
    a = b;
    b = c;
  }
  return out;
}

}  // namespace

bool cuda_device_available() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
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
    cases.push_back({bf16, 3, 63, 64, 1, {1, 2, 3, 5, 8, 13, 21, 34, 55}});
    cases.push_back({bf16, 2, 1003, 64, 200, {233, 377, 610, 987}});
    cases.push_back({bf16, 1, 700, 64, 1024, {}});
    cases.push_back({bf16, 2, 1000, 128, 100, {144, 233, 377, 610, 987}});
    cases.push_back({bf16, 40, 130, 64, 64, fibonacci_offsets(64, 130)});
  }
  // Long sequences: the reference is the CPU fast kernel in float64 (itself tested
  // against the dense reference), so every row is still checked.
  cases.push_back({true, 1, 70000, 64, 64, fibonacci_offsets(64, 70000)});
  cases.push_back({false, 2, 20001, 128, 64, {89.5, 144, 233.2, 377, 610, 987.9, 1597}});
  cases.push_back({true, 3, 9999, 64, 64, {100.5, 1000.25, 5000.75}});
  return cases;
}

CudaCaseResult run_cuda_case(const CudaCase& c, unsigned seed) {
  CudaCaseResult r;
  r.name = case_name(c);
  try {
    DilatedAttentionParams p;
    p.batch_heads = c.batch_heads;
    p.seq_len = c.seq_len;
    p.head_dim = c.head_dim;
    p.window = c.window;
    p.offsets = c.offsets.data();
    p.num_offsets = static_cast<int64_t>(c.offsets.size());
    p.scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
    if (kernels::gpu::dilated_attention_uses_tensor_cores(
            p, c.bf16 ? kernels::gpu::ScalarType::kBFloat16 : kernels::gpu::ScalarType::kFloat32,
            false)) {
      r.name += " tc";
    }
    const size_t count = static_cast<size_t>(c.batch_heads) * c.seq_len * c.head_dim;
    const size_t rows = static_cast<size_t>(c.batch_heads) * c.seq_len;
    const size_t K = c.offsets.size();

    std::mt19937 gen(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    auto draw = [&] {
      std::vector<double> x(count);
      for (double& t : x) t = c.bf16 ? round_bf16(normal(gen)) : normal(gen);
      return x;
    };
    const auto q = draw(), k = draw(), v = draw(), grad_out = draw();

    // float64 reference: dense O(n^2) for short sequences, the CPU kernel for long.
    std::vector<double> ref_out, ref_dq, ref_dk, ref_dv, ref_doff(K);
    if (static_cast<int64_t>(c.seq_len) <= 1100) {
      ref_out = kernels::reference::forward(p, q, k, v);
      auto g = kernels::reference::backward(p, q, k, v, grad_out);
      ref_dq = std::move(g.q);
      ref_dk = std::move(g.k);
      ref_dv = std::move(g.v);
      ref_doff = std::move(g.offsets);
    } else {
      ref_out.resize(count);
      std::vector<double> lse(rows);
      kernels::dilated_attention_forward_cpu<double>(p, q.data(), k.data(), v.data(),
                                                     ref_out.data(), lse.data());
      ref_dq.resize(count);
      ref_dk.resize(count);
      ref_dv.resize(count);
      kernels::dilated_attention_backward_cpu<double>(
          p, q.data(), k.data(), v.data(), ref_out.data(), lse.data(), grad_out.data(),
          ref_dq.data(), ref_dk.data(), ref_dv.data(), K ? ref_doff.data() : nullptr);
    }

    DeviceTensor dq_in(count, c.bf16), dk_in(count, c.bf16), dv_in(count, c.bf16);
    DeviceTensor d_do(count, c.bf16), d_out(count, c.bf16);
    DeviceTensor d_gq(count, c.bf16), d_gk(count, c.bf16), d_gv(count, c.bf16);
    dq_in.upload(q);
    dk_in.upload(k);
    dv_in.upload(v);
    d_do.upload(grad_out);
    float* lse = nullptr;
    double* doff = nullptr;
    void* workspace = nullptr;
    check(cudaMalloc(reinterpret_cast<void**>(&lse), rows * sizeof(float)), "cudaMalloc");
    check(cudaMalloc(reinterpret_cast<void**>(&doff), (K + 1) * sizeof(double)), "cudaMalloc");
    check(cudaMemset(doff, 0xFF, (K + 1) * sizeof(double)), "cudaMemset");
    const size_t ws_bytes = kernels::gpu::dilated_attention_backward_workspace_bytes(p);
    check(cudaMalloc(&workspace, ws_bytes + 16), "cudaMalloc");
    check(cudaMemset(workspace, 0xFF, ws_bytes + 16), "cudaMemset");
    const auto type =
        c.bf16 ? kernels::gpu::ScalarType::kBFloat16 : kernels::gpu::ScalarType::kFloat32;
    kernels::gpu::dilated_attention_forward_cuda(p, type, dq_in.ptr, dk_in.ptr, dv_in.ptr,
                                                 d_out.ptr, lse, nullptr);
    check(cudaDeviceSynchronize(), "forward");
    const auto out = d_out.download();
    r.all_written = all_finite(out);
    r.err_out = rel_l2(out, ref_out);
    // The backward twice: without the offset gradient and, when there are offsets, with
    // it (bf16 at d = 64: the tensor cores' two-row variant; d = 128 and fp32: the CUDA
    // cores). The outputs are poisoned again before each run; errors are the larger of
    // the two.
    for (const bool offsets_grad : {false, true}) {
      if (offsets_grad && K == 0) break;
      for (DeviceTensor* t : {&d_gq, &d_gk, &d_gv}) {
        check(cudaMemset(t->ptr, 0xFF, t->count * (t->bf16 ? 2 : 4)), "cudaMemset");
      }
      kernels::gpu::dilated_attention_backward_cuda(
          p, type, dq_in.ptr, dk_in.ptr, dv_in.ptr, d_out.ptr, lse, d_do.ptr, d_gq.ptr, d_gk.ptr,
          d_gv.ptr, offsets_grad ? doff : nullptr, workspace, nullptr);
      check(cudaDeviceSynchronize(), "backward");
      const auto gq = d_gq.download(), gk = d_gk.download(), gv = d_gv.download();
      r.all_written = r.all_written && all_finite(gq) && all_finite(gk) && all_finite(gv);
      r.err_dq = std::max(r.err_dq, rel_l2(gq, ref_dq));
      r.err_dk = std::max(r.err_dk, rel_l2(gk, ref_dk));
      r.err_dv = std::max(r.err_dv, rel_l2(gv, ref_dv));
      if (offsets_grad) {
        std::vector<double> goff(K);
        check(cudaMemcpy(goff.data(), doff, K * sizeof(double), cudaMemcpyDeviceToHost),
              "download");
        r.all_written = r.all_written && all_finite(goff);
        r.err_doff = rel_l2(goff, ref_doff);
      }
    }
    cudaFree(lse);
    cudaFree(doff);
    cudaFree(workspace);

    if (c.bf16) {
      r.bound_out = 2 * bf16_rounding_error(ref_out) + 1e-4;
      r.bound_dq = 2 * bf16_rounding_error(ref_dq) + 1e-4;
      r.bound_dk = 2 * bf16_rounding_error(ref_dk) + 1e-4;
      r.bound_dv = 2 * bf16_rounding_error(ref_dv) + 1e-4;
      r.bound_doff = 1e-2;
    } else {
      r.bound_out = r.bound_dq = r.bound_dk = r.bound_dv = 1e-4;
      r.bound_doff = 1e-3;
    }
    r.passed = r.all_written && r.err_out <= r.bound_out && r.err_dq <= r.bound_dq &&
               r.err_dk <= r.bound_dk && r.err_dv <= r.bound_dv && r.err_doff <= r.bound_doff;
  } catch (const std::exception& e) {
    r.error = e.what();
    r.passed = false;
  }
  return r;
}

}  // namespace reach::tests
