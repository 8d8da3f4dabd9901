#include "tests/kernels/chunk_attention_cuda_cases.hpp"

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <stdexcept>

#include "kernels/cpu/reference_chunk_attention.hpp"
#include "kernels/cuda/chunk_attention.hpp"

namespace reach::tests {
namespace {

using kernels::ChunkAttentionParams;

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

double round_to(bool bf16, double x) {
  return bf16 ? from_bf16_bits(to_bf16_bits(static_cast<float>(x)))
              : static_cast<double>(static_cast<float>(x));
}

double rel_l2(const std::vector<double>& x, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t t = 0; t < x.size(); ++t) {
    num += (x[t] - ref[t]) * (x[t] - ref[t]);
    den += ref[t] * ref[t];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// A device buffer of `count` elements of `bytes` each, poisoned with NaN (0xFF bytes).
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t count = 0, bytes = 0;
  DeviceBuffer(size_t n, size_t element_bytes) : count(n), bytes(element_bytes) {
    check(cudaMalloc(&ptr, n * bytes + 16), "cudaMalloc");
    check(cudaMemset(ptr, 0xFF, n * bytes + 16), "cudaMemset");
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr); }
};

void upload(DeviceBuffer& d, const std::vector<double>& x, bool bf16) {
  if (bf16) {
    std::vector<uint16_t> h(x.size());
    for (size_t t = 0; t < x.size(); ++t) h[t] = to_bf16_bits(static_cast<float>(x[t]));
    check(cudaMemcpy(d.ptr, h.data(), h.size() * 2, cudaMemcpyHostToDevice), "upload");
  } else {
    std::vector<float> h(x.begin(), x.end());
    check(cudaMemcpy(d.ptr, h.data(), h.size() * 4, cudaMemcpyHostToDevice), "upload");
  }
}

std::vector<double> download(const DeviceBuffer& d, bool bf16) {
  std::vector<double> x(d.count);
  if (bf16) {
    std::vector<uint16_t> h(d.count);
    check(cudaMemcpy(h.data(), d.ptr, d.count * 2, cudaMemcpyDeviceToHost), "download");
    for (size_t t = 0; t < d.count; ++t) x[t] = from_bf16_bits(h[t]);
  } else {
    std::vector<float> h(d.count);
    check(cudaMemcpy(h.data(), d.ptr, d.count * 4, cudaMemcpyDeviceToHost), "download");
    for (size_t t = 0; t < d.count; ++t) x[t] = h[t];
  }
  return x;
}

std::string case_name(const ChunkCudaCase& c) {
  std::ostringstream s;
  s << (c.bf16 ? "bf16" : "fp32") << " B=" << c.batch << " Hq=" << c.query_heads
    << " Hkv=" << c.kv_heads << " n=" << c.seq_len << " d=" << c.head_dim
    << " dr=" << c.retrieval_dim << " S=" << c.chunk_size << " k=" << c.top_k << " W=" << c.window
    << (c.fraction_budget ? " frac" : "") << (c.stick_breaking ? " sb" : "");
  return s.str();
}

}  // namespace

bool chunk_cuda_device_available() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

std::vector<ChunkCudaCase> chunk_cuda_cases() {
  std::vector<ChunkCudaCase> cases;
  for (bool bf16 : {false, true}) {
    for (int d : {64, 128}) {
      // GQA, n not a multiple of S (trailing partial chunk), small chunks.
      cases.push_back({bf16, 2, 4, 2, 300, d, 32, 16, 4, 0, false, false});
      // Window exclusion, stick-breaking weights.
      cases.push_back({bf16, 1, 2, 1, 1024, d, 64, 64, 8, 128, false, true});
      // Fraction budget, 4 query heads per group.
      cases.push_back({bf16, 1, 8, 2, 2048, d, 128, 64, 8, 0, true, false});
      // Every query before its first complete chunk: zeros.
      cases.push_back({bf16, 1, 1, 1, 5, d, 16, 8, 2, 0, false, false});
      // The largest slot count the CUDA kernels take.
      cases.push_back({bf16, 1, 2, 2, 1000, d, 48, 32, 16, 0, false, true});
    }
  }
  // The tensor-core path (bf16, S a multiple of 16 up to 64) with many queries per chunk, so
  // chunk lists span several pieces (kPieceEntries = 512) and tiles: GQA 4:1 at S = 64;
  // window exclusion + stick-breaking; fraction budget with a partial chunk and S = 32;
  // S = 48 (a partial key block), k = 16, retrieval_dim 128.
  for (int d : {64, 128}) {
    cases.push_back({true, 1, 8, 2, 4096, d, 64, 64, 8, 0, false, false});
    cases.push_back({true, 1, 4, 1, 4096, d, 64, 64, 8, 256, false, true});
    cases.push_back({true, 2, 4, 2, 3000, d, 32, 32, 6, 0, true, false});
    cases.push_back({true, 1, 2, 2, 2048, d, 128, 48, 16, 0, false, true});
  }
  return cases;
}

ChunkCudaResult run_chunk_cuda_case(const ChunkCudaCase& c, unsigned seed) {
  ChunkCudaResult res;
  res.name = case_name(c);
  try {
    ChunkAttentionParams p;
    p.batch = c.batch;
    p.query_heads = c.query_heads;
    p.kv_heads = c.kv_heads;
    p.seq_len = c.seq_len;
    p.head_dim = c.head_dim;
    p.retrieval_dim = c.retrieval_dim;
    p.selection = {
        c.chunk_size,
        c.top_k,
        c.window,
        c.fraction_budget ? pattern::ChunkBudgetRule::fraction : pattern::ChunkBudgetRule::fixed,
        0.25,
        2};
    p.weighting = c.stick_breaking ? kernels::ChunkWeighting::stick_breaking
                                   : kernels::ChunkWeighting::softmax;
    p.scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
    p.retrieval_scale = 1.0 / std::sqrt(static_cast<double>(c.retrieval_dim));
    const size_t nq = static_cast<size_t>(p.batch * p.query_heads * p.seq_len * p.head_dim);
    const size_t nkv = static_cast<size_t>(p.batch * p.kv_heads * p.seq_len * p.head_dim);
    const size_t nr = static_cast<size_t>(p.batch * p.kv_heads * p.seq_len * p.retrieval_dim);
    const size_t nl = static_cast<size_t>(p.batch * p.kv_heads * p.chunks() * p.retrieval_dim);
    const size_t slots = static_cast<size_t>(p.batch * p.kv_heads * p.seq_len * p.slots());
    const size_t qslots = static_cast<size_t>(p.batch * p.query_heads * p.seq_len * p.slots());
    std::mt19937_64 rng(seed);
    auto random = [&](size_t size, double sd) {
      std::normal_distribution<double> dist(0.0, sd);
      std::vector<double> x(size);
      for (auto& e : x) e = round_to(c.bf16, dist(rng));  // the reference sees what the GPU sees
      return x;
    };
    const auto q = random(nq, 1), k = random(nkv, 1), v = random(nkv, 1), r = random(nr, 2),
               l = random(nl, 1), go = random(nq, 1);
    const size_t eb = c.bf16 ? 2 : 4;
    DeviceBuffer dq_in(nq, eb), dk_in(nkv, eb), dv_in(nkv, eb), dr_in(nr, eb), dl_in(nl, eb),
        dgo(nq, eb), dout(nq, eb), didx(slots, 8), dw(slots, 4), dlse(qslots, 4), gq(nq, eb),
        gk(nkv, eb), gv(nkv, eb), gr(nr, eb), gl(nl, eb);
    upload(dq_in, q, c.bf16);
    upload(dk_in, k, c.bf16);
    upload(dv_in, v, c.bf16);
    upload(dr_in, r, c.bf16);
    upload(dl_in, l, c.bf16);
    upload(dgo, go, c.bf16);
    const auto type =
        c.bf16 ? kernels::gpu::ScalarType::kBFloat16 : kernels::gpu::ScalarType::kFloat32;
    kernels::gpu::chunk_attention_forward_cuda(p, type, dq_in.ptr, dk_in.ptr, dv_in.ptr, dr_in.ptr,
                                               dl_in.ptr, dout.ptr, static_cast<int64_t*>(didx.ptr),
                                               static_cast<float*>(dw.ptr),
                                               static_cast<float*>(dlse.ptr), nullptr);
    // The backward's workspace as the op sizes it (the tensor-core path's for bf16).
    DeviceBuffer typed_ws(kernels::gpu::chunk_attention_backward_workspace_bytes(p, type), 1);
    kernels::gpu::chunk_attention_backward_cuda(
        p, type, dq_in.ptr, dk_in.ptr, dv_in.ptr, dr_in.ptr, dl_in.ptr, dgo.ptr,
        static_cast<const int64_t*>(didx.ptr), static_cast<const float*>(dw.ptr),
        static_cast<const float*>(dlse.ptr), gq.ptr, gk.ptr, gv.ptr, gr.ptr, gl.ptr, typed_ws.ptr,
        nullptr);
    check(cudaDeviceSynchronize(), "kernels");
    if (kernels::gpu::chunk_attention_uses_tensor_cores(p, type)) {
      // No float atomics on this path: a second backward must reproduce every bit.
      std::vector<double> first[5];
      const DeviceBuffer* grads_out[5] = {&gq, &gk, &gv, &gr, &gl};
      for (int i = 0; i < 5; ++i) first[i] = download(*grads_out[i], c.bf16);
      kernels::gpu::chunk_attention_backward_cuda(
          p, type, dq_in.ptr, dk_in.ptr, dv_in.ptr, dr_in.ptr, dl_in.ptr, dgo.ptr,
          static_cast<const int64_t*>(didx.ptr), static_cast<const float*>(dw.ptr),
          static_cast<const float*>(dlse.ptr), gq.ptr, gk.ptr, gv.ptr, gr.ptr, gl.ptr, typed_ws.ptr,
          nullptr);
      check(cudaDeviceSynchronize(), "second backward");
      for (int i = 0; i < 5; ++i) {
        const auto again = download(*grads_out[i], c.bf16);
        for (size_t t = 0; t < again.size(); ++t) {
          const bool same =
              again[t] == first[i][t] || (std::isnan(again[t]) && std::isnan(first[i][t]));
          res.reproducible = res.reproducible && same;
        }
      }
    }
    std::vector<int64_t> idx(slots);
    check(cudaMemcpy(idx.data(), didx.ptr, slots * 8, cudaMemcpyDeviceToHost), "indices");

    const auto want = kernels::reference::chunk_forward(p, q, k, v, r, l);
    const auto grads = kernels::reference::chunk_backward(p, q, k, v, r, l, go);
    for (size_t t = 0; t < slots; ++t) res.index_mismatches += idx[t] != want.indices[t];
    const std::vector<double>* refs[6] = {&want.out, &grads.q, &grads.k,
                                          &grads.v,  &grads.r, &grads.landmarks};
    const DeviceBuffer* got[6] = {&dout, &gq, &gk, &gv, &gr, &gl};
    res.passed = res.index_mismatches == 0;
    for (int i = 0; i < 6; ++i) {
      const auto x = download(*got[i], c.bf16);
      for (double e : x) res.all_written = res.all_written && std::isfinite(e);
      res.err[i] = rel_l2(x, *refs[i]);
      if (c.bf16) {
        std::vector<double> rounded(refs[i]->size());
        for (size_t t = 0; t < rounded.size(); ++t) rounded[t] = round_to(true, (*refs[i])[t]);
        res.bound[i] = 2 * rel_l2(rounded, *refs[i]) + 1e-4;
      } else {
        res.bound[i] = 1e-4;
      }
      res.passed = res.passed && res.err[i] <= res.bound[i];
    }
    res.passed = res.passed && res.all_written && res.reproducible;
  } catch (const std::exception& e) {
    res.error = e.what();
    res.passed = false;
  }
  return res;
}

}  // namespace reach::tests
