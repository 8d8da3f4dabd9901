// The CUDA entmax-attention kernels (kernels/cuda/entmax_attention.hpp) against the float64 CPU
// kernel (itself tested against the dense float64 reference in entmax_attention_cpu_test), on
// random inputs: op harness cases on backend "cuda", which skip without a GPU. Every normaliser
// (alpha-entmax at a = 1.5, 2 and per-head general a, ASEntmax with per-head and per-query beta
// and gamma, SSMax, softmax with ALiBi, NAPE), both paths (tiled: dense causal and plain window;
// rows: window + Fibonacci offsets), n from 1 to 70,000, head_dim 32..128 (48: padded).
// bf16 dense causal entmax at head_dim 64 / 128 takes the tensor-core kernels (mma.sync scores,
// P V, dz K, P^T dO, dz^T Q); the cases at the end (n up to 4,096) aim at them.
//
// Error rule (relative L2, ||x - ref|| / ||ref||, ref in float64 on the same inputs):
//  * float32: out, dq, dk, dv within 1e-4. Scores and products accumulate in float32 (eps 6e-8)
//    over at most a few thousand terms; tau is solved to |f(tau) - 1| < 1e-6 (tiled path: the
//    output is renormalised, so this moves each p by ~1e-6 of the row's largest p) or to machine
//    precision (row path). Indexing, masking or support errors are O(1e-2) or more.
//  * bfloat16 (inputs rounded to bf16, ref on the rounded inputs): out, dq, dk, dv within 2x what
//    rounding the float64 result to bf16 costs, plus 1e-4 (harness::Bf16Rule; FlashAttention's).
//  * d alpha, d delta, d beta, d gamma (float64 outputs, per head or per query): within 1e-3 for
//    both dtypes. Nothing on their path is rounded to bf16 (the kernels read bf16 inputs exactly
//    into float32), but each is a sum over n rows of float32 row sums that cancel (d alpha =
//    (sum g s z - tau' sum s g - sum g p log p) / (a - 1)).
//  * support: with v = identity rows (n = d = 128), out is the probability matrix; a key whose
//    probability is 0 in the reference must be exactly 0 on the GPU and vice versa, except
//    ties at the threshold (either side below 1e-6, which a float32 score can move across).
// Every output buffer is poisoned with NaN first, so an unwritten element fails the case.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "kernels/cpu/entmax_attention.hpp"
#include "kernels/cpu/reference_entmax_attention.hpp"
#include "kernels/cuda/entmax_attention.hpp"
#include "pattern/dilated_offsets.hpp"
#include "tests/kernels/harness.hpp"

namespace reach::harness {
namespace {

using kernels::EntmaxAttentionParams;

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

// A device buffer: bf16, float32 or float64 elements, NaN-poisoned (0xFF bytes).
struct Device {
  enum Kind { kBf16, kF32, kF64 };
  void* ptr = nullptr;
  size_t count = 0;
  Kind kind;
  Device(size_t n, Kind k) : count(n), kind(k) {
    check(cudaMalloc(&ptr, bytes() + 16), "cudaMalloc");
    check(cudaMemset(ptr, 0xFF, bytes() + 16), "cudaMemset");
  }
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;
  ~Device() { cudaFree(ptr); }
  size_t bytes() const { return count * (kind == kBf16 ? 2 : (kind == kF32 ? 4 : 8)); }
  void poison() { check(cudaMemset(ptr, 0xFF, bytes()), "cudaMemset"); }
  void upload(const std::vector<double>& x) {
    if (kind == kBf16) {
      std::vector<uint16_t> h(count);
      for (size_t t = 0; t < count; ++t) h[t] = to_bf16_bits(static_cast<float>(x[t]));
      check(cudaMemcpy(ptr, h.data(), bytes(), cudaMemcpyHostToDevice), "upload");
    } else if (kind == kF32) {
      std::vector<float> h(x.begin(), x.end());
      check(cudaMemcpy(ptr, h.data(), bytes(), cudaMemcpyHostToDevice), "upload");
    } else {
      check(cudaMemcpy(ptr, x.data(), bytes(), cudaMemcpyHostToDevice), "upload");
    }
  }
  std::vector<double> download() const {
    std::vector<double> x(count);
    if (kind == kBf16) {
      std::vector<uint16_t> h(count);
      check(cudaMemcpy(h.data(), ptr, bytes(), cudaMemcpyDeviceToHost), "download");
      for (size_t t = 0; t < count; ++t) x[t] = from_bf16_bits(h[t]);
    } else if (kind == kF32) {
      std::vector<float> h(count);
      check(cudaMemcpy(h.data(), ptr, bytes(), cudaMemcpyDeviceToHost), "download");
      for (size_t t = 0; t < count; ++t) x[t] = h[t];
    } else {
      check(cudaMemcpy(x.data(), ptr, bytes(), cudaMemcpyDeviceToHost), "download");
    }
    return x;
  }
};

bool cuda_device_available() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

bool all_finite(const std::vector<double>& x) {
  return std::all_of(x.begin(), x.end(), [](double v) { return std::isfinite(v); });
}

std::vector<double> fibonacci_offsets(int64_t window, int64_t reach) {
  const auto ints = pattern::integer_offsets({pattern::OffsetBase::fibonacci, 1.0, window, reach});
  return std::vector<double>(ints.begin(), ints.end());
}

// The normalisers the cases cover.
enum class Norm {
  entmax15,
  sparsemax,
  general,
  mixed,
  asentmax,
  asentmax_per_query,
  ssmax,
  alibi,
  nape
};

const char* norm_name(Norm m) {
  switch (m) {
    case Norm::entmax15:
      return "entmax15";
    case Norm::sparsemax:
      return "sparsemax";
    case Norm::general:
      return "alpha_per_head";
    case Norm::mixed:
      return "alpha_mixed";
    case Norm::asentmax:
      return "asentmax";
    case Norm::asentmax_per_query:
      return "asentmax_per_query";
    case Norm::ssmax:
      return "ssmax";
    case Norm::alibi:
      return "softmax_alibi";
    case Norm::nape:
      return "asentmax_nape";
  }
  return "?";
}

struct Case {
  bool bf16 = false;
  int batch = 1, heads = 1, n = 1, d = 64;
  int64_t window = 1;  // >= n: dense causal
  std::vector<double> offsets;
  Norm norm = Norm::entmax15;
  bool support = false;  // v = identity rows: compare the probabilities' zeros

  std::string shape() const {
    EntmaxAttentionParams p;
    p.base.batch_heads = batch * heads;
    p.base.seq_len = n;
    p.base.head_dim = d;
    p.base.window = window;
    p.base.offsets = offsets.data();
    p.base.num_offsets = static_cast<int64_t>(offsets.size());
    const bool tiles = kernels::gpu::entmax_uses_tiles(p);
    return std::string(norm_name(norm)) + "_" + shape_part("B", batch) + "_" +
           shape_part("H", heads) + "_" + shape_part("n", n) + "_" + shape_part("d", d) + "_" +
           (window >= n ? std::string("dense") : shape_part("W", double(window))) + "_" +
           shape_part("K", double(offsets.size())) + (tiles ? "_tiled" : "_rows") +
           (support ? "_support" : "");
  }
};

// Host-side head parameters of a case (float64), and the params struct pointing at them.
struct Heads {
  std::vector<double> alpha, delta, beta, gamma, alibi;
  bool softmax = false, scaling = false, per_query = false;

  Heads(const Case& c, Rng& rng) {
    const auto H = static_cast<size_t>(c.heads);
    const size_t rows = static_cast<size_t>(c.batch) * H * c.n;
    alpha.assign(H, 1.5);
    switch (c.norm) {
      case Norm::entmax15:
        break;
      case Norm::sparsemax:
        alpha.assign(H, 2.0);
        break;
      case Norm::general:
        for (size_t h = 0; h < H; ++h) alpha[h] = h % 2 ? 1.75 : 1.25;
        break;
      case Norm::mixed:  // every exponent form in one launch: r = 2, 1, 4 and 4/3
        for (size_t h = 0; h < H; ++h) alpha[h] = std::array{1.5, 2.0, 1.25, 1.75}[h % 4];
        break;
      case Norm::asentmax:
      case Norm::nape:
        scaling = true;
        delta = rng.uniform(H, 0.5, 1.0);
        beta = rng.uniform(H, 0.1, 0.6);
        gamma = rng.uniform(H, -0.5, 1.5);
        break;
      case Norm::asentmax_per_query:
        scaling = per_query = true;
        delta = rng.uniform(H, 0.5, 1.0);
        beta = rng.uniform(rows, 0.1, 0.6);
        gamma = rng.uniform(rows, -1.0, 1.5);
        break;
      case Norm::ssmax:
        softmax = scaling = true;
        delta.assign(H, 0.0);
        beta = rng.uniform(H, 0.2, 0.5);
        gamma.assign(H, 1.0);
        break;
      case Norm::alibi:
        softmax = true;
        break;
    }
    if (c.norm == Norm::alibi || c.norm == Norm::nape) {
      // NAPE: the first half of the heads NoPE (slope 0), the rest ALiBi.
      alibi.assign(H, 0.0);
      for (size_t h = c.norm == Norm::nape ? H / 2 : 0; h < H; ++h) {
        alibi[h] = std::pow(2.0, -8.0 * static_cast<double>(h + 1) / static_cast<double>(H));
      }
    }
  }

  EntmaxAttentionParams params(const Case& c) const {
    EntmaxAttentionParams p;
    p.base.batch_heads = c.batch * c.heads;
    p.base.seq_len = c.n;
    p.base.head_dim = c.d;
    p.base.window = c.window;
    p.base.offsets = c.offsets.data();
    p.base.num_offsets = static_cast<int64_t>(c.offsets.size());
    p.base.scale = 1.0 / std::sqrt(static_cast<double>(c.d));
    p.num_heads = c.heads;
    p.softmax = softmax;
    p.alpha = softmax ? nullptr : alpha.data();
    p.log_n_scaling = scaling;
    p.per_query_scale = per_query;
    p.delta = scaling ? delta.data() : nullptr;
    p.beta = scaling ? beta.data() : nullptr;
    p.gamma = scaling ? gamma.data() : nullptr;
    p.alibi_slopes = alibi.empty() ? nullptr : alibi.data();
    return p;
  }
};

std::vector<Case> cuda_cases() {
  std::vector<Case> cases;
  for (bool bf16 : {false, true}) {
    // Tiled path: dense causal (W >= n) and plain windows.
    cases.push_back({bf16, 1, 1, 1, 64, 1, {}, Norm::entmax15});
    cases.push_back({bf16, 2, 1, 63, 32, 63, {}, Norm::sparsemax});
    cases.push_back({bf16, 1, 2, 200, 64, 200, {}, Norm::general});
    cases.push_back({bf16, 1, 2, 1000, 128, 1000, {}, Norm::asentmax});
    cases.push_back({bf16, 1, 2, 300, 64, 300, {}, Norm::asentmax_per_query});
    cases.push_back({bf16, 2, 1, 777, 48, 777, {}, Norm::ssmax});
    cases.push_back({bf16, 1, 2, 513, 64, 513, {}, Norm::alibi});
    cases.push_back({bf16, 1, 4, 4099, 64, 4099, {}, Norm::nape});
    cases.push_back({bf16, 1, 2, 1000, 64, 100, {}, Norm::entmax15});
    cases.push_back({bf16, 1, 2, 1000, 32, 130, {}, Norm::general});
    // Row path: window + offsets.
    cases.push_back({bf16, 1, 2, 257, 64, 16, fibonacci_offsets(16, 257), Norm::entmax15});
    cases.push_back({bf16, 1, 2, 1001, 32, 64, fibonacci_offsets(64, 1001), Norm::asentmax});
    cases.push_back({bf16, 2, 2, 300, 64, 8, fibonacci_offsets(8, 300), Norm::asentmax_per_query});
    cases.push_back({bf16, 1, 2, 513, 128, 32, {34, 55, 89, 144, 233}, Norm::ssmax});
    cases.push_back({bf16, 1, 2, 700, 64, 8, fibonacci_offsets(8, 700), Norm::general});
    cases.push_back({bf16, 1, 4, 900, 64, 64, fibonacci_offsets(64, 900), Norm::nape});
    cases.push_back({bf16, 1, 2, 400, 64, 1, fibonacci_offsets(1, 400), Norm::sparsemax});
    // Support agreement (v = identity rows).
    cases.push_back({bf16, 1, 1, 128, 128, 128, {}, Norm::entmax15, true});
    cases.push_back({bf16, 1, 1, 128, 128, 128, {}, Norm::sparsemax, true});
    cases.push_back({bf16, 1, 1, 128, 128, 16, fibonacci_offsets(16, 128), Norm::entmax15, true});
  }
  // Long sequences (the float64 CPU kernel is the reference).
  cases.push_back({true, 1, 1, 70000, 64, 64, fibonacci_offsets(64, 70000), Norm::entmax15});
  cases.push_back({false, 1, 2, 20001, 64, 64, fibonacci_offsets(64, 20001), Norm::nape});
  cases.push_back({true, 1, 2, 8192, 64, 8192, {}, Norm::entmax15});
  cases.push_back({false, 1, 2, 6000, 64, 6000, {}, Norm::asentmax});
  // The tensor-core path (bf16, dense causal, head_dim 64 / 128, entmax): every exponent form,
  // ASEntmax per head and per query, NAPE, several query tiles and a partial last tile.
  cases.push_back({true, 1, 4, 4096, 64, 4096, {}, Norm::mixed});
  cases.push_back({true, 1, 4, 2050, 128, 2050, {}, Norm::mixed});
  cases.push_back({true, 1, 2, 2048, 128, 2048, {}, Norm::entmax15});
  cases.push_back({true, 1, 2, 4096, 64, 4096, {}, Norm::sparsemax});
  cases.push_back({true, 1, 2, 3001, 128, 3001, {}, Norm::general});
  cases.push_back({true, 1, 2, 2048, 64, 2048, {}, Norm::asentmax});
  cases.push_back({true, 2, 2, 1500, 128, 1500, {}, Norm::asentmax_per_query});
  cases.push_back({true, 1, 4, 4096, 128, 4096, {}, Norm::nape});
  cases.push_back({true, 1, 4, 2000, 64, 2000, {}, Norm::nape});
  cases.push_back({true, 1, 4, 128, 128, 128, {}, Norm::mixed, true});
  cases.push_back({true, 1, 1, 30000, 64, 300, {}, Norm::entmax15});
  return cases;
}

// Per-row CUDA gradients [4][rows] summed per head (or kept per query for beta and gamma).
std::vector<double> reduce_rows(const std::vector<double>& rows, int component, const Case& c,
                                bool per_query) {
  const size_t count = static_cast<size_t>(c.batch) * c.heads * c.n;
  const double* x = rows.data() + static_cast<size_t>(component) * count;
  if (per_query) return std::vector<double>(x, x + count);
  std::vector<double> out(static_cast<size_t>(c.heads), 0.0);
  for (size_t r = 0; r < count; ++r) out[(r / c.n) % c.heads] += x[r];
  return out;
}

void run_case(const Case& c, const std::string& name, Report& r) {
  if (!cuda_device_available()) return r.skip("no CUDA device");
  Rng rng(seed_of(name));
  const Heads heads(c, rng);
  const auto p = heads.params(c);
  const size_t rows = static_cast<size_t>(c.batch) * c.heads * c.n;
  const size_t count = rows * static_cast<size_t>(c.d);
  auto draw = [&] { return c.bf16 ? round_bf16(rng.normal(count)) : rng.normal(count); };
  const auto q = draw(), k = draw(), grad_out = draw();
  std::vector<double> v = draw();
  if (c.support) {  // v_j = e_j: out_i is the probability row of query i
    std::fill(v.begin(), v.end(), 0.0);
    for (size_t row = 0; row < rows; ++row) v[row * c.d + (row % c.n)] = 1.0;
  }
  const size_t H = static_cast<size_t>(c.heads);
  const size_t scale_count = heads.per_query ? rows : H;

  // float64 reference (CPU kernel).
  std::vector<double> ref_out(count), ref_dq(count), ref_dk(count), ref_dv(count);
  std::vector<double> ref_da(H), ref_dd(H), ref_db(scale_count), ref_dg(scale_count);
  kernels::entmax_attention_forward_cpu<double>(p, q.data(), k.data(), v.data(), ref_out.data());
  kernels::entmax_attention_backward_cpu<double>(
      p, q.data(), k.data(), v.data(), grad_out.data(), ref_dq.data(), ref_dk.data(), ref_dv.data(),
      heads.softmax ? nullptr : ref_da.data(), heads.scaling ? ref_dd.data() : nullptr,
      heads.scaling ? ref_db.data() : nullptr, heads.scaling ? ref_dg.data() : nullptr);

  // Device copies: tensors and the head parameters (float64).
  const auto kind = c.bf16 ? Device::kBf16 : Device::kF32;
  Device dq_in(count, kind), dk_in(count, kind), dv_in(count, kind), dgo(count, kind);
  Device dout(count, kind), dgq(count, kind), dgk(count, kind), dgv(count, kind);
  Device drows(4 * rows, Device::kF64);
  dq_in.upload(q);
  dk_in.upload(k);
  dv_in.upload(v);
  dgo.upload(grad_out);
  auto device_copy = [](const std::vector<double>& x) {
    auto d = std::make_unique<Device>(std::max<size_t>(x.size(), 1), Device::kF64);
    if (!x.empty()) d->upload(x);
    return d;
  };
  const auto d_alpha = device_copy(heads.alpha), d_delta = device_copy(heads.delta),
             d_beta = device_copy(heads.beta), d_gamma = device_copy(heads.gamma),
             d_alibi = device_copy(heads.alibi);
  EntmaxAttentionParams dp = p;
  dp.alpha = p.alpha ? static_cast<const double*>(d_alpha->ptr) : nullptr;
  dp.delta = p.delta ? static_cast<const double*>(d_delta->ptr) : nullptr;
  dp.beta = p.beta ? static_cast<const double*>(d_beta->ptr) : nullptr;
  dp.gamma = p.gamma ? static_cast<const double*>(d_gamma->ptr) : nullptr;
  dp.alibi_slopes = p.alibi_slopes ? static_cast<const double*>(d_alibi->ptr) : nullptr;
  const std::string unsupported = kernels::gpu::entmax_cuda_support_problem(dp);
  if (!unsupported.empty()) return r.fail("unsupported: " + unsupported);
  Device saved(kernels::gpu::entmax_attention_saved_bytes(dp) / 4 + 4, Device::kF32);
  Device workspace(kernels::gpu::entmax_attention_backward_workspace_bytes(dp) / 4 + 4,
                   Device::kF32);
  const auto type =
      c.bf16 ? kernels::gpu::ScalarType::kBFloat16 : kernels::gpu::ScalarType::kFloat32;
  kernels::gpu::entmax_attention_forward_cuda(dp, type, dq_in.ptr, dk_in.ptr, dv_in.ptr, dout.ptr,
                                              saved.ptr, nullptr);
  check(cudaDeviceSynchronize(), "forward");
  kernels::gpu::entmax_attention_backward_cuda(
      dp, type, dq_in.ptr, dk_in.ptr, dv_in.ptr, dgo.ptr, saved.ptr, dgq.ptr, dgk.ptr, dgv.ptr,
      static_cast<double*>(drows.ptr), workspace.ptr, nullptr);
  check(cudaDeviceSynchronize(), "backward");
  const auto out = dout.download(), gq = dgq.download(), gk = dgk.download(), gv = dgv.download(),
             grows = drows.download();
  if (!(all_finite(out) && all_finite(gq) && all_finite(gk) && all_finite(gv) &&
        all_finite(grows))) {
    r.fail("an output element was left unwritten (NaN poison) or is not finite");
  }
  const Bf16Rule rule;
  auto bound = [&](const std::vector<double>& ref) { return c.bf16 ? rule.bound(ref) : 1e-4; };
  r.lt("out rel-L2", rel_l2_error(out, ref_out), bound(ref_out));
  r.lt("dq rel-L2", rel_l2_error(gq, ref_dq), bound(ref_dq));
  r.lt("dk rel-L2", rel_l2_error(gk, ref_dk), bound(ref_dk));
  r.lt("dv rel-L2", rel_l2_error(gv, ref_dv), bound(ref_dv));
  if (!heads.softmax) {
    r.lt("dalpha rel-L2", rel_l2_error(reduce_rows(grows, 0, c, false), ref_da), 1e-3);
  }
  if (heads.scaling) {
    // SSMax fixes delta = 0 and gamma = 1 (no gradient wanted), but the kernel returns them.
    r.lt("ddelta rel-L2", rel_l2_error(reduce_rows(grows, 1, c, false), ref_dd), 1e-3);
    r.lt("dbeta rel-L2", rel_l2_error(reduce_rows(grows, 2, c, heads.per_query), ref_db), 1e-3);
    r.lt("dgamma rel-L2", rel_l2_error(reduce_rows(grows, 3, c, heads.per_query), ref_dg), 1e-3);
  }
  if (c.support) {
    long mismatches = 0;
    for (size_t t = 0; t < count; ++t) {
      const bool ref_zero = ref_out[t] == 0.0, got_zero = out[t] == 0.0;
      if ((ref_zero && out[t] > 1e-6) || (got_zero && ref_out[t] > 1e-6)) ++mismatches;
    }
    r.lt("support mismatches (beyond threshold ties)", static_cast<double>(mismatches), 1.0);
  }
}

REACH_OP_CASES(entmax_attention_cuda_cases) {
  for (const auto& c : cuda_cases()) {
    OpCase oc{"entmax_attention", "cuda", c.bf16 ? "bf16" : "f32", c.shape(), "fwd_bwd", {}};
    const std::string name = oc.name();
    oc.run = [c, name](Report& r) { run_case(c, name, r); };
    registry.add(std::move(oc));
  }
}

}  // namespace
}  // namespace reach::harness
