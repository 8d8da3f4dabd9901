// The fused block kernels on CUDA (kernels/cuda/rope_split.hpp, kernels/cuda/add_layer_norm.hpp
// with LayerNorm and RMSNorm, kernels/cuda/swiglu.hpp, kernels/cuda/bias_gelu.hpp) against their
// float64 references on random inputs, forward and backward: op harness cases on backend "cuda"
// (ctest label gpu), which skip without a GPU. RoPE split cases cover both output layouts (heads
// first, token major); SwiGLU cases both its 16-byte path and its element-by-element path
// (pointers one element off 16-byte alignment); the norm cases both the fast kernels (dim a
// multiple of 128, aligned rows) and the generic ones (other dims, and fast dims with rows one
// element off alignment); bias + GELU cases its fast kernels (cols % 8 == 0, aligned) and its
// generic ones (other cols, or pointers one element off). Every output buffer is poisoned with NaN
// first, so an unwritten element fails.
//
// Error rule (relative L2 against the float64 reference on the same, rounded, inputs):
//  * float32 outputs within 1e-5: each element is a handful of float32 operations (RoPE) or
//    sums of at most D = 768 float32 terms per row (LayerNorm; dgamma/dbeta: per-block float32
//    partials of rows / add_layer_norm_backward_blocks terms, a handful in these cases, then
//    summed in float64 here), eps 6e-8, so the expected error is ~1e-6;
//  * RMSNorm as LayerNorm (the same kernel without centring), with no D = 1 row: there its input
//    gradient is rstd * dy * gamma * eps / (h^2 + eps), ~1e-7 of the terms float32 subtracts to
//    get it, so any float32 evaluation (the tensor-op path's too) is O(1) off in relative terms;
//  * SwiGLU float32 outputs within 1e-5: a handful of float32 operations and one expf per
//    element (~1e-7 relative); bias + GELU's y and dh likewise (one erfc fit of < 1.2e-7, one expf
//    backward);
//  * bias + GELU's bias gradient: see bias_gelu_cuda_cases (a worst-case bound per column);
//  * bf16 outputs (q, k, v, dqkv of the bf16 kernels; y and dr of the bf16 norms; y, da, db of
//    the bf16 SwiGLU; y, dh of the bf16 bias + GELU) within the bf16 rule (harness::Bf16Rule: 2x
//    what rounding the float64 result to bf16 costs + 1e-4): the kernels compute in float32 and
//    round once;
//  * permute_heads (kernels/cuda/head_layout.hpp) moves bytes only: exact equality with the
//    host permutation.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cpu/reference_add_layer_norm.hpp"
#include "kernels/cpu/reference_bias_gelu.hpp"
#include "kernels/cpu/reference_rope_split.hpp"
#include "kernels/cpu/reference_swiglu.hpp"
#include "kernels/cuda/add_layer_norm.hpp"
#include "kernels/cuda/bias_gelu.hpp"
#include "kernels/cuda/column_sums.hpp"
#include "kernels/cuda/head_layout.hpp"
#include "kernels/cuda/rope_split.hpp"
#include "kernels/cuda/swiglu.hpp"
#include "tests/kernels/harness.hpp"

namespace reach::harness {
namespace {

using kernels::cpu::RopeSplitShape;
using kernels::gpu::ScalarType;

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
  }
}

bool cuda_device_available() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
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

// A NaN-poisoned device buffer holding a host vector in bf16 or float32.
struct DeviceTensor {
  void* ptr = nullptr;
  size_t count = 0;
  bool bf16 = false;
  DeviceTensor(size_t n, bool is_bf16) : count(n), bf16(is_bf16) {
    check(cudaMalloc(&ptr, n * (bf16 ? 2 : 4)), "cudaMalloc");
    check(cudaMemset(ptr, 0xFF, count * (bf16 ? 2 : 4)), "cudaMemset");
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
    check(cudaDeviceSynchronize(), "kernel");
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
  float* f32() const { return static_cast<float*>(ptr); }
};

// What the device holds after upload: the values rounded to the buffer's type.
std::vector<double> rounded(const std::vector<double>& x, bool bf16) {
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    out[i] = bf16 ? from_bf16_bits(to_bf16_bits(static_cast<float>(x[i])))
                  : static_cast<double>(static_cast<float>(x[i]));
  }
  return out;
}

void compare(Report& r, const std::string& what, bool bf16, const std::vector<double>& got,
             const std::vector<double>& want) {
  if (bf16) {
    r.bf16(what, got, want);
  } else {
    r.rel_l2(what, got, want, 1e-5);
  }
}

}  // namespace

REACH_OP_CASES(rope_split_cuda_cases) {
  for (const bool bf16 : {false, true}) {
    for (const RopeSplitShape s :
         {RopeSplitShape{2, 5, 3, 8}, RopeSplitShape{2, 5, 3, 6}, RopeSplitShape{1, 37, 2, 64},
          RopeSplitShape{3, 129, 8, 64}, RopeSplitShape{2, 17, 4, 128},
          RopeSplitShape{2, 5, 3, 8, true}, RopeSplitShape{3, 129, 8, 64, true}}) {
      const std::string shape = shape_part("b", static_cast<double>(s.batch)) + "_" +
                                shape_part("t", static_cast<double>(s.seq_len)) + "_" +
                                shape_part("h", static_cast<double>(s.heads)) + "_" +
                                shape_part("d", static_cast<double>(s.head_dim)) +
                                (s.token_major ? "_token_major" : "");
      const std::string dtype = bf16 ? "bf16" : "f32";
      registry.add(
          {"rope_split", "cuda", dtype, shape, "forward_backward", [=](Report& r) {
             if (!cuda_device_available()) return r.skip("no CUDA device");
             Rng rng(seed_of("rope_split_cuda" + dtype + shape));
             const auto n = static_cast<size_t>(s.head_count());
             const auto qkv = rounded(rng.normal(static_cast<size_t>(s.qkv_count())), bf16);
             // RoPE's own angles: position t times base^(-i / half).
             const int64_t half = s.head_dim / 2;
             std::vector<double> cos(static_cast<size_t>(s.table_count())), sin(cos.size());
             for (int64_t t = 0; t < s.seq_len; ++t) {
               for (int64_t i = 0; i < half; ++i) {
                 const double a =
                     static_cast<double>(t) *
                     std::pow(10000.0, -static_cast<double>(i) / static_cast<double>(half));
                 cos[static_cast<size_t>(t * half + i)] = static_cast<float>(std::cos(a));
                 sin[static_cast<size_t>(t * half + i)] = static_cast<float>(std::sin(a));
               }
             }
             DeviceTensor d_qkv(qkv.size(), bf16), d_cos(cos.size(), false),
                 d_sin(sin.size(), false), d_q(n, bf16), d_k(n, bf16), d_v(n, bf16);
             d_qkv.upload(qkv);
             d_cos.upload(cos);
             d_sin.upload(sin);
             kernels::gpu::rope_split_forward_cuda(
                 s, bf16 ? ScalarType::kBFloat16 : ScalarType::kFloat32, d_qkv.ptr, d_cos.f32(),
                 d_sin.f32(), d_q.ptr, d_k.ptr, d_v.ptr, nullptr);
             std::vector<double> q, k, v;
             kernels::cpu::reference_rope_split_forward(s, qkv, cos, sin, q, k, v);
             compare(r, "q", bf16, d_q.download(), q);
             compare(r, "k", bf16, d_k.download(), k);
             compare(r, "v", bf16, d_v.download(), v);

             const auto gq = rounded(rng.normal(n), bf16), gk = rounded(rng.normal(n), bf16),
                        gv = rounded(rng.normal(n), bf16);
             DeviceTensor d_gq(n, bf16), d_gk(n, bf16), d_gv(n, bf16), d_dqkv(qkv.size(), bf16);
             d_gq.upload(gq);
             d_gk.upload(gk);
             d_gv.upload(gv);
             kernels::gpu::rope_split_backward_cuda(
                 s, bf16 ? ScalarType::kBFloat16 : ScalarType::kFloat32, d_gq.ptr, d_gk.ptr,
                 d_gv.ptr, d_cos.f32(), d_sin.f32(), d_dqkv.ptr, nullptr);
             std::vector<double> dqkv;
             kernels::cpu::reference_rope_split_backward(s, gq, gk, gv, cos, sin, dqkv);
             compare(r, "dqkv", bf16, d_dqkv.download(), dqkv);
           }});
    }
  }
}

// A pure permutation: every byte must land exactly where the host permutation puts it.
REACH_OP_CASES(permute_heads_cuda_cases) {
  for (const kernels::gpu::HeadLayout s :
       {kernels::gpu::HeadLayout{1, 1, 1, 16}, kernels::gpu::HeadLayout{2, 3, 5, 16},
        kernels::gpu::HeadLayout{2, 8, 129, 128}, kernels::gpu::HeadLayout{3, 4, 33, 256}}) {
    for (const bool to_tokens : {true, false}) {
      const std::string shape = shape_part("b", static_cast<double>(s.batch)) + "_" +
                                shape_part("h", static_cast<double>(s.heads)) + "_" +
                                shape_part("t", static_cast<double>(s.seq_len)) + "_" +
                                shape_part("bytes", static_cast<double>(s.row_bytes)) +
                                (to_tokens ? "_heads_to_tokens" : "_tokens_to_heads");
      registry.add(
          {"permute_heads", "cuda", "bytes", shape, "exact", [=](Report& r) {
             if (!cuda_device_available()) return r.skip("no CUDA device");
             const int64_t words = s.row_bytes / 4;
             const auto count = static_cast<size_t>(s.batch * s.heads * s.seq_len * words);
             std::mt19937_64 rng(seed_of("permute_heads" + shape));
             std::vector<uint32_t> src(count);
             for (auto& w : src) w = static_cast<uint32_t>(rng());
             void *d_src = nullptr, *d_dst = nullptr;
             check(cudaMalloc(&d_src, count * 4), "cudaMalloc");
             check(cudaMalloc(&d_dst, count * 4), "cudaMalloc");
             check(cudaMemset(d_dst, 0xFF, count * 4), "cudaMemset");
             check(cudaMemcpy(d_src, src.data(), count * 4, cudaMemcpyHostToDevice), "upload");
             kernels::gpu::permute_heads_cuda(s, to_tokens, d_src, d_dst, nullptr);
             std::vector<uint32_t> got(count);
             check(cudaDeviceSynchronize(), "kernel");
             check(cudaMemcpy(got.data(), d_dst, count * 4, cudaMemcpyDeviceToHost), "download");
             cudaFree(d_src);
             cudaFree(d_dst);
             size_t wrong = 0;
             for (int64_t b = 0; b < s.batch; ++b) {
               for (int64_t h = 0; h < s.heads; ++h) {
                 for (int64_t t = 0; t < s.seq_len; ++t) {
                   const int64_t hf = ((b * s.heads + h) * s.seq_len + t) * words;
                   const int64_t tm = ((b * s.seq_len + t) * s.heads + h) * words;
                   for (int64_t w = 0; w < words; ++w) {
                     const auto from = static_cast<size_t>((to_tokens ? hf : tm) + w);
                     const auto to = static_cast<size_t>((to_tokens ? tm : hf) + w);
                     wrong += got[to] != src[from];
                   }
                 }
               }
             }
             r.lt("misplaced words", static_cast<double>(wrong), 0.5);
           }});
    }
  }
}

namespace {

// Shapes for both norms: dims a multiple of 128 (128 ... 768) take the fast kernels (row in
// registers), the others (1, 7, 20, 96, 100, 130) the generic ones; row counts not a multiple of
// the rows a block takes (8 forward, 4 backward) and 9001 rows of D = 128, several rows per
// backward warp. misaligned: one element in front of every row tensor (x, r, h, y, dy, dh, dx,
// dr; cudaMalloc is 256-byte aligned, so the rows start 4 or 2 bytes past a 16-byte boundary),
// which sends a fast-path dim to the generic kernels.
struct NormShape {
  int64_t rows, dim;
  bool misaligned = false;
};

std::string norm_shape_name(const NormShape& s, bool with_r, bool with_dh) {
  return shape_part("rows", static_cast<double>(s.rows)) + "_" +
         shape_part("d", static_cast<double>(s.dim)) + (with_r ? "_r" : "") +
         (with_dh ? "_dh" : "") + (s.misaligned ? "_misaligned" : "");
}

// The skip elements in front of a row tensor when misaligned (see NormShape).
struct Padding {
  size_t skip = 0;
  std::vector<double> padded(const std::vector<double>& v) const {
    std::vector<double> out(skip, 1.0);
    out.insert(out.end(), v.begin(), v.end());
    return out;
  }
  void* at(const DeviceTensor& t) const {
    return static_cast<char*>(t.ptr) + skip * (t.bf16 ? 2 : 4);
  }
  float* f32(const DeviceTensor& t) const { return static_cast<float*>(at(t)); }
  std::vector<double> unpadded(const DeviceTensor& t) const {
    const auto v = t.download();
    return std::vector<double>(v.begin() + static_cast<std::ptrdiff_t>(skip), v.end());
  }
  // Outputs written in front of their first element (those stay NaN-poisoned).
  void check_front(Report& r, std::initializer_list<const DeviceTensor*> outputs) const {
    if (skip == 0) return;
    double written = 0;
    for (const DeviceTensor* t : outputs) written += std::isnan(t->download()[0]) ? 0 : 1;
    r.lt("outputs written in front of their first element", written, 0.5);
  }
};

}  // namespace

REACH_OP_CASES(add_layer_norm_cuda_cases) {
  for (const bool bf16 : {false, true}) {
    for (const NormShape s :
         {NormShape{1, 1}, NormShape{3, 7}, NormShape{11, 20}, NormShape{33, 96},
          NormShape{67, 100}, NormShape{45, 130}, NormShape{37, 128}, NormShape{9001, 128},
          NormShape{130, 384}, NormShape{1000, 512}, NormShape{4100, 512}, NormShape{5, 768},
          NormShape{203, 768}, NormShape{257, 512, true}, NormShape{21, 768, true}}) {
      for (const bool with_r : {false, true}) {
        for (const bool with_dh : {false, true}) {
          const std::string dtype = bf16 ? "bf16" : "f32";
          const std::string shape = norm_shape_name(s, with_r, with_dh);
          registry.add(
              {"add_layer_norm", "cuda", dtype, shape, "forward_backward", [=](Report& r) {
                 if (!cuda_device_available()) return r.skip("no CUDA device");
                 Rng rng(seed_of("add_layer_norm_cuda" + dtype + shape));
                 const auto n = static_cast<size_t>(s.rows * s.dim);
                 const auto d = static_cast<size_t>(s.dim);
                 const Padding pad{s.misaligned ? size_t{1} : size_t{0}};
                 const size_t np = n + pad.skip;
                 // r and y (and dy) in bf16 for the bf16 case (autocast); x, h, gamma, beta
                 // float32.
                 const auto x = rounded(rng.normal(n, 2.0), false);
                 const auto res = with_r ? rounded(rng.normal(n), bf16) : std::vector<double>{};
                 const auto gamma = rounded(rng.normal(d), false),
                            beta = rounded(rng.normal(d), false);
                 kernels::gpu::AddLayerNormArgs args{
                     s.rows, s.dim, 1e-5, bf16 ? ScalarType::kBFloat16 : ScalarType::kFloat32,
                     bf16 ? ScalarType::kBFloat16 : ScalarType::kFloat32};
                 DeviceTensor d_x(np, false), d_r(with_r ? np : 1, bf16), d_gamma(d, false),
                     d_beta(d, false), d_h(np, false), d_y(np, bf16),
                     d_mean(static_cast<size_t>(s.rows), false),
                     d_rstd(static_cast<size_t>(s.rows), false);
                 d_x.upload(pad.padded(x));
                 if (with_r) d_r.upload(pad.padded(res));
                 d_gamma.upload(gamma);
                 d_beta.upload(beta);
                 kernels::gpu::add_layer_norm_forward_cuda(
                     args, pad.f32(d_x), with_r ? pad.at(d_r) : nullptr, d_gamma.f32(),
                     d_beta.f32(), with_r ? pad.f32(d_h) : nullptr, pad.at(d_y), d_mean.f32(),
                     d_rstd.f32(), nullptr);
                 std::vector<double> h, y, mean, rstd;
                 kernels::cpu::reference_add_layer_norm_forward(s.rows, s.dim, x, res, gamma, beta,
                                                                1e-5, h, y, mean, rstd);
                 if (with_r) r.rel_l2("h", pad.unpadded(d_h), h, 1e-5);
                 compare(r, "y", bf16, pad.unpadded(d_y), y);
                 r.rel_l2("mean", d_mean.download(), mean, 1e-5);
                 r.rel_l2("rstd", d_rstd.download(), rstd, 1e-5);

                 const auto dy = rounded(rng.normal(n), bf16);
                 const auto dh = with_dh ? rounded(rng.normal(n), false) : std::vector<double>{};
                 const auto blocks =
                     static_cast<size_t>(kernels::gpu::add_layer_norm_backward_blocks(args));
                 DeviceTensor d_dy(np, bf16), d_dh(with_dh ? np : 1, false), d_dx(np, false),
                     d_dr(np, bf16), d_pg(blocks * d, false), d_pb(blocks * d, false);
                 d_dy.upload(pad.padded(dy));
                 if (with_dh) d_dh.upload(pad.padded(dh));
                 // The kernel reads h (x itself when there is no r), mean and rstd from the
                 // forward.
                 const float* saved_h = with_r ? pad.f32(d_h) : pad.f32(d_x);
                 kernels::gpu::add_layer_norm_backward_cuda(
                     args, pad.at(d_dy), with_dh ? pad.f32(d_dh) : nullptr, saved_h, d_mean.f32(),
                     d_rstd.f32(), d_gamma.f32(), pad.f32(d_dx), pad.at(d_dr), d_pg.f32(),
                     d_pb.f32(), nullptr);
                 std::vector<double> dx, dgamma, dbeta;
                 kernels::cpu::reference_add_layer_norm_backward(s.rows, s.dim, dy, dh, h, gamma,
                                                                 1e-5, dx, dgamma, dbeta);
                 r.rel_l2("dx", pad.unpadded(d_dx), dx, 1e-5);
                 compare(r, "dr", bf16, pad.unpadded(d_dr), dx);
                 const auto pg = d_pg.download(), pb = d_pb.download();
                 std::vector<double> got_g(d, 0.0), got_b(d, 0.0);
                 for (size_t blk = 0; blk < blocks; ++blk) {
                   for (size_t c = 0; c < d; ++c) {
                     got_g[c] += pg[blk * d + c];
                     got_b[c] += pb[blk * d + c];
                   }
                 }
                 r.rel_l2("dgamma", got_g, dgamma, 1e-5);
                 r.rel_l2("dbeta", got_b, dbeta, 1e-5);
                 if (with_r) {
                   pad.check_front(r, {&d_h, &d_y, &d_dx, &d_dr});
                 } else {
                   pad.check_front(r, {&d_y, &d_dx, &d_dr});
                 }
               }});
        }
      }
    }
  }
}

REACH_OP_CASES(add_rms_norm_cuda_cases) {
  constexpr double kEps = 1e-6;  // model::RmsNormImpl's
  for (const bool bf16 : {false, true}) {
    for (const NormShape s :
         {NormShape{2, 3}, NormShape{3, 7}, NormShape{11, 20}, NormShape{33, 96},
          NormShape{67, 100}, NormShape{45, 130}, NormShape{37, 128}, NormShape{9001, 128},
          NormShape{130, 384}, NormShape{1000, 512}, NormShape{4100, 512}, NormShape{5, 768},
          NormShape{203, 768}, NormShape{257, 512, true}, NormShape{21, 768, true}}) {
      for (const bool with_r : {false, true}) {
        for (const bool with_dh : {false, true}) {
          const std::string dtype = bf16 ? "bf16" : "f32";
          const std::string shape = norm_shape_name(s, with_r, with_dh);
          registry.add(
              {"add_rms_norm", "cuda", dtype, shape, "forward_backward", [=](Report& r) {
                 if (!cuda_device_available()) return r.skip("no CUDA device");
                 Rng rng(seed_of("add_rms_norm_cuda" + dtype + shape));
                 const auto n = static_cast<size_t>(s.rows * s.dim);
                 const auto d = static_cast<size_t>(s.dim);
                 const Padding pad{s.misaligned ? size_t{1} : size_t{0}};
                 const size_t np = n + pad.skip;
                 // r and y (and dy) in bf16 for the bf16 case (autocast); x, h, gamma float32.
                 const auto x = rounded(rng.normal(n, 2.0), false);
                 const auto res = with_r ? rounded(rng.normal(n), bf16) : std::vector<double>{};
                 const auto gamma = rounded(rng.normal(d), false);
                 const ScalarType type = bf16 ? ScalarType::kBFloat16 : ScalarType::kFloat32;
                 const kernels::gpu::AddLayerNormArgs args{
                     s.rows, s.dim, kEps, type, type, kernels::gpu::NormKind::kRmsNorm};
                 DeviceTensor d_x(np, false), d_r(with_r ? np : 1, bf16), d_gamma(d, false),
                     d_h(np, false), d_y(np, bf16), d_rstd(static_cast<size_t>(s.rows), false);
                 d_x.upload(pad.padded(x));
                 if (with_r) d_r.upload(pad.padded(res));
                 d_gamma.upload(gamma);
                 // RMSNorm reads no beta and writes no mean: nullptr for both.
                 kernels::gpu::add_layer_norm_forward_cuda(
                     args, pad.f32(d_x), with_r ? pad.at(d_r) : nullptr, d_gamma.f32(), nullptr,
                     with_r ? pad.f32(d_h) : nullptr, pad.at(d_y), nullptr, d_rstd.f32(), nullptr);
                 std::vector<double> h, y, rstd;
                 kernels::cpu::reference_add_rms_norm_forward(s.rows, s.dim, x, res, gamma, kEps, h,
                                                              y, rstd);
                 if (with_r) r.rel_l2("h", pad.unpadded(d_h), h, 1e-5);
                 compare(r, "y", bf16, pad.unpadded(d_y), y);
                 r.rel_l2("rstd", d_rstd.download(), rstd, 1e-5);

                 const auto dy = rounded(rng.normal(n), bf16);
                 const auto dh = with_dh ? rounded(rng.normal(n), false) : std::vector<double>{};
                 const auto blocks =
                     static_cast<size_t>(kernels::gpu::add_layer_norm_backward_blocks(args));
                 DeviceTensor d_dy(np, bf16), d_dh(with_dh ? np : 1, false), d_dx(np, false),
                     d_dr(np, bf16), d_pg(blocks * d, false);
                 d_dy.upload(pad.padded(dy));
                 if (with_dh) d_dh.upload(pad.padded(dh));
                 const float* saved_h = with_r ? pad.f32(d_h) : pad.f32(d_x);
                 kernels::gpu::add_layer_norm_backward_cuda(
                     args, pad.at(d_dy), with_dh ? pad.f32(d_dh) : nullptr, saved_h, nullptr,
                     d_rstd.f32(), d_gamma.f32(), pad.f32(d_dx), pad.at(d_dr), d_pg.f32(), nullptr,
                     nullptr);
                 std::vector<double> dx, dgamma;
                 kernels::cpu::reference_add_rms_norm_backward(s.rows, s.dim, dy, dh, h, gamma,
                                                               kEps, dx, dgamma);
                 r.rel_l2("dx", pad.unpadded(d_dx), dx, 1e-5);
                 compare(r, "dr", bf16, pad.unpadded(d_dr), dx);
                 const auto pg = d_pg.download();
                 std::vector<double> got_g(d, 0.0);
                 for (size_t blk = 0; blk < blocks; ++blk) {
                   for (size_t c = 0; c < d; ++c) got_g[c] += pg[blk * d + c];
                 }
                 r.rel_l2("dgamma", got_g, dgamma, 1e-5);
                 if (with_r) {
                   pad.check_front(r, {&d_h, &d_y, &d_dx, &d_dr});
                 } else {
                   pad.check_front(r, {&d_y, &d_dx, &d_dr});
                 }
               }});
        }
      }
    }
  }
}

// Counts around the 16-byte packs (8 bf16 / 4 float32 elements: 1, 7, 13 and 4099 leave a
// tail) and the paper model's MLP width (33 tokens x 1366); each aligned and one element off.
REACH_OP_CASES(swiglu_cuda_cases) {
  for (const bool bf16 : {false, true}) {
    for (const size_t count :
         {size_t{1}, size_t{7}, size_t{8}, size_t{13}, size_t{4099}, size_t{33 * 1366}}) {
      for (const bool misaligned : {false, true}) {
        const std::string dtype = bf16 ? "bf16" : "f32";
        const std::string shape =
            shape_part("n", static_cast<double>(count)) + (misaligned ? "_misaligned" : "");
        registry.add(
            {"swiglu", "cuda", dtype, shape, "forward_backward", [=](Report& r) {
               if (!cuda_device_available()) return r.skip("no CUDA device");
               Rng rng(seed_of("swiglu_cuda" + dtype + shape));
               // Gates over both tails of silu and its minimum; values and gradients N(0, 1).
               const auto a = rounded(rng.normal(count, 3.0), bf16);
               const auto b = rounded(rng.normal(count), bf16);
               const auto dy = rounded(rng.normal(count), bf16);
               // One element in front of each tensor when misaligned (cudaMalloc is 256-byte
               // aligned, so the data then starts 2 or 4 bytes past a 16-byte boundary).
               const size_t skip = misaligned ? 1 : 0;
               const auto padded = [&](const std::vector<double>& v) {
                 std::vector<double> out(skip, 1.0);
                 out.insert(out.end(), v.begin(), v.end());
                 return out;
               };
               const auto at = [&](const DeviceTensor& t) {
                 return static_cast<char*>(t.ptr) + skip * (bf16 ? 2 : 4);
               };
               const auto unpadded = [&](const DeviceTensor& t) {
                 const auto v = t.download();
                 return std::vector<double>(v.begin() + static_cast<std::ptrdiff_t>(skip), v.end());
               };
               const ScalarType type = bf16 ? ScalarType::kBFloat16 : ScalarType::kFloat32;
               DeviceTensor d_a(count + skip, bf16), d_b(count + skip, bf16),
                   d_y(count + skip, bf16), d_dy(count + skip, bf16), d_da(count + skip, bf16),
                   d_db(count + skip, bf16);
               d_a.upload(padded(a));
               d_b.upload(padded(b));
               d_dy.upload(padded(dy));
               kernels::gpu::swiglu_forward_cuda(static_cast<int64_t>(count), type, at(d_a),
                                                 at(d_b), at(d_y), nullptr);
               kernels::gpu::swiglu_backward_cuda(static_cast<int64_t>(count), type, at(d_dy),
                                                  at(d_a), at(d_b), at(d_da), at(d_db), nullptr);
               std::vector<double> y, da, db;
               kernels::cpu::reference_swiglu_forward(a, b, y);
               kernels::cpu::reference_swiglu_backward(dy, a, b, da, db);
               compare(r, "y", bf16, unpadded(d_y), y);
               compare(r, "da", bf16, unpadded(d_da), da);
               compare(r, "db", bf16, unpadded(d_db), db);
               if (misaligned) {  // the element in front of each output is left as poisoned
                 double written = 0;
                 for (const DeviceTensor* t : {&d_y, &d_da, &d_db}) {
                   written += std::isnan(t->download()[0]) ? 0 : 1;
                 }
                 r.lt("outputs written in front of their first element", written, 0.5);
               }
             }});
      }
    }
  }
}

namespace {

struct GeluShape {
  int64_t rows, cols;
  bool misaligned = false;
};

}  // namespace

// h0 [rows, cols] and bias [cols]: cols a multiple of 8 (2048: the paper preset's MLP width; 512,
// 128, 16) take the fast kernels, the others (100, 20, 1, 7) the generic ones, as do fast cols
// with every pointer one element off 16-byte alignment (misaligned, as the norm cases'). Row
// counts not a multiple of the 8 rows a block takes at once, and 30001 x 16 (the most row groups,
// so each thread sums ~15 rows) for the bias gradient's accumulation.
//
// The bias gradient is the float64 sum of the kernel's partial rows, against the reference's
// column sums of the exact dh (the kernel sums its float32 values of dh before rounding them to
// the output type, so a bf16 dh's rounding does not enter; the bound is the same for both types).
// Per column c, with u = 2^-24 and m = ceil(rows / (8 partial rows)) the most rows one thread
// sums: each float32 dh is within ~8 u |dy| of the exact one (the erfc fit's < 2 u in 1 + erf,
// expf, the rounding of h0 + bias times |x gelu''(x)| <= 0.6, a few products; |gelu'| <= 1.13), and
// the float32 sum of m terms and then of the block's 8 lanes adds at most (m + 8) u times the sum
// of the |terms| (<= 1.13 sum |dy|). So |got_c - want_c| <= (m + 16) 2u sum_rows |dy_rc|, a
// worst-case bound (typical errors are ~sqrt of it); a missed or doubled row is O(|dy|) over it.
REACH_OP_CASES(bias_gelu_cuda_cases) {
  for (const bool bf16 : {false, true}) {
    for (const GeluShape s :
         {GeluShape{1, 1}, GeluShape{3, 7}, GeluShape{5, 20}, GeluShape{67, 100},
          GeluShape{1, 2048}, GeluShape{1000, 2048}, GeluShape{37, 512}, GeluShape{4100, 128},
          GeluShape{30001, 16}, GeluShape{37, 512, true}, GeluShape{257, 2048, true}}) {
      const std::string dtype = bf16 ? "bf16" : "f32";
      const std::string shape = shape_part("rows", static_cast<double>(s.rows)) + "_" +
                                shape_part("cols", static_cast<double>(s.cols)) +
                                (s.misaligned ? "_misaligned" : "");
      registry.add(
          {"bias_gelu", "cuda", dtype, shape, "forward_backward", [=](Report& r) {
             if (!cuda_device_available()) return r.skip("no CUDA device");
             Rng rng(seed_of("bias_gelu_cuda" + dtype + shape));
             const auto n = static_cast<size_t>(s.rows * s.cols);
             const auto d = static_cast<size_t>(s.cols);
             const Padding pad{s.misaligned ? size_t{1} : size_t{0}};
             // h0 + bias ~ N(0, 5): both tails of gelu and its minimum (x ~ -0.75) in the sample.
             const auto h0 = rounded(rng.normal(n, 2.0), bf16);
             const auto bias = rounded(rng.normal(d), false);
             const auto dy = rounded(rng.normal(n), bf16);
             const ScalarType type = bf16 ? ScalarType::kBFloat16 : ScalarType::kFloat32;
             const auto partial_rows = static_cast<size_t>(
                 kernels::gpu::bias_gelu_backward_partial_rows(s.rows, s.cols, type));
             DeviceTensor d_h0(n + pad.skip, bf16), d_bias(d + pad.skip, false),
                 d_y(n + pad.skip, bf16), d_dy(n + pad.skip, bf16), d_dh(n + pad.skip, bf16),
                 d_partial(partial_rows * d + pad.skip, false);
             d_h0.upload(pad.padded(h0));
             d_bias.upload(pad.padded(bias));
             d_dy.upload(pad.padded(dy));
             kernels::gpu::bias_gelu_forward_cuda(s.rows, s.cols, type, pad.at(d_h0),
                                                  pad.f32(d_bias), pad.at(d_y), nullptr);
             kernels::gpu::bias_gelu_backward_cuda(s.rows, s.cols, type, pad.at(d_dy), pad.at(d_h0),
                                                   pad.f32(d_bias), pad.at(d_dh),
                                                   pad.f32(d_partial), nullptr);
             std::vector<double> y, dh, dbias;
             kernels::cpu::reference_bias_gelu_forward(s.rows, s.cols, h0, bias, y);
             kernels::cpu::reference_bias_gelu_backward(s.rows, s.cols, dy, h0, bias, dh, dbias);
             compare(r, "y", bf16, pad.unpadded(d_y), y);
             compare(r, "dh", bf16, pad.unpadded(d_dh), dh);
             const auto partial = pad.unpadded(d_partial);
             std::vector<double> got(d, 0.0), scale(d, 0.0);
             for (size_t p = 0; p < partial_rows; ++p) {
               for (size_t c = 0; c < d; ++c) got[c] += partial[p * d + c];
             }
             for (size_t i = 0; i < n; ++i) scale[i % d] += std::abs(dy[i]);
             double worst = 0;  // max over columns of |got - want| / sum |dy| (NaN kept)
             for (size_t c = 0; c < d; ++c) {
               const double e = std::abs(got[c] - dbias[c]) / std::max(scale[c], 1e-300);
               if (std::isnan(e) || e > worst) worst = e;
             }
             const auto m = static_cast<double>(
                 (static_cast<size_t>(s.rows) + 8 * partial_rows - 1) / (8 * partial_rows));
             r.lt("dbias |error| / sum |dy|, worst column", worst,
                  (m + 16) * 2 * std::ldexp(1.0, -24));
             r.lt("partial rows within 1..256 and ceil(rows / 8)",
                  partial_rows >= 1 && partial_rows <= 256 &&
                          partial_rows <= (static_cast<size_t>(s.rows) + 7) / 8
                      ? 0.0
                      : 1.0,
                  0.5);
             pad.check_front(r, {&d_y, &d_dh, &d_partial});
           }});
    }
  }
}

// Column sums (kernels/cuda/column_sums.hpp) of random float32 matrices, against the float64 sum
// on the host: the kernel accumulates in float64 and rounds once, so each column is within half
// an ulp of float32 of the exact sum (plus float64 rounding, ~rows 2^-53 relative): relative L2
// 1e-7 > 2^-24 (a missed or doubled row is ~1/sqrt(rows) relative). A second run gives the same
// bits (fixed order). Shapes: the partial sums' (132..256 rows, dims 512 / 2048), odd sizes,
// one row, more rows than the 8 lanes x unroll.
REACH_OP_CASES(column_sums_cuda_cases) {
  for (const auto& [rows, cols] : std::initializer_list<std::pair<int64_t, int64_t>>{
           {1, 1}, {3, 7}, {132, 512}, {256, 2048}, {1000, 33}, {9, 100}}) {
    const std::string shape = shape_part("rows", static_cast<double>(rows)) + "_" +
                              shape_part("cols", static_cast<double>(cols));
    registry.add({"column_sums", "cuda", "f32", shape, "forward", [=](Report& r) {
                    if (!cuda_device_available()) return r.skip("no CUDA device");
                    Rng rng(seed_of("column_sums_cuda" + shape));
                    const auto n = static_cast<size_t>(rows * cols);
                    const auto in = rounded(rng.normal(n), false);
                    DeviceTensor d_in(n, false), d_out(static_cast<size_t>(cols), false),
                        d_again(static_cast<size_t>(cols), false);
                    d_in.upload(in);
                    kernels::gpu::column_sums_cuda(rows, cols, d_in.f32(), d_out.f32(), nullptr);
                    kernels::gpu::column_sums_cuda(rows, cols, d_in.f32(), d_again.f32(), nullptr);
                    std::vector<double> want(static_cast<size_t>(cols), 0.0);
                    for (size_t i = 0; i < n; ++i) want[i % static_cast<size_t>(cols)] += in[i];
                    const auto got = d_out.download();
                    r.rel_l2("sums", got, want, 1e-7);
                    r.lt("columns differing between two runs",
                         static_cast<double>(got != d_again.download()), 0.5);
                  }});
  }
}

// The bf16 column sums (the bias gradient of ops::linear_bias) against the float64 sum of the
// same bf16 values: pass 1 sums at most 32 rows per thread and 8 lanes in float32 (<= 40 roundings
// of a partial sum), pass 2 in float64, so |got - want| <= 41 u sum |x| per column, u = 2^-24
// (worst case; random-sign terms give ~sqrt of it). Shapes: the model's [65,536, 512] and odd ones
// (the one-column-a-thread kernel: cols % 8 != 0, or the input one element off alignment).
REACH_OP_CASES(column_sums_bf16_cuda_cases) {
  struct Shape {
    int64_t rows, cols;
    bool misaligned;
  };
  for (const Shape s : {Shape{1, 8, false}, Shape{5, 3, false}, Shape{300, 64, false},
                        Shape{65536, 512, false}, Shape{1000, 100, false}, Shape{777, 256, true}}) {
    const std::string shape = shape_part("rows", static_cast<double>(s.rows)) + "_" +
                              shape_part("cols", static_cast<double>(s.cols)) +
                              (s.misaligned ? "_misaligned" : "");
    registry.add({"column_sums", "cuda", "bf16", shape, "forward", [=](Report& r) {
                    if (!cuda_device_available()) return r.skip("no CUDA device");
                    Rng rng(seed_of("column_sums_bf16_cuda" + shape));
                    const auto n = static_cast<size_t>(s.rows * s.cols);
                    const auto cols = static_cast<size_t>(s.cols);
                    const size_t skip = s.misaligned ? 1 : 0;
                    auto in = rounded(rng.normal(n + skip), true);
                    const auto ws_rows =
                        static_cast<size_t>(kernels::gpu::column_sums_bf16_workspace_rows(s.rows));
                    DeviceTensor d_in(n + skip, true), d_ws(ws_rows * cols, false),
                        d_out(cols, false);
                    d_in.upload(in);
                    kernels::gpu::column_sums_bf16_cuda(s.rows, s.cols,
                                                        static_cast<uint16_t*>(d_in.ptr) + skip,
                                                        d_ws.f32(), d_out.f32(), nullptr);
                    std::vector<double> want(cols, 0.0), scale(cols, 0.0);
                    for (size_t i = 0; i < n; ++i) {
                      want[i % cols] += in[i + skip];
                      scale[i % cols] += std::abs(in[i + skip]);
                    }
                    const auto got = d_out.download();
                    double worst = 0;  // max over columns of |got - want| / sum |x| (NaN kept)
                    for (size_t c = 0; c < cols; ++c) {
                      const double e = std::abs(got[c] - want[c]) / std::max(scale[c], 1e-300);
                      if (std::isnan(e) || e > worst) worst = e;
                    }
                    r.lt("|error| / sum |x|, worst column", worst, 41 * std::ldexp(1.0, -24));
                  }});
  }
}

}  // namespace reach::harness
