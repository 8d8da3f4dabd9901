// The chunk attention torch op against a dense torch autograd composite built from the
// definition (landmark scores, candidate mask, top-k, gathered chunks, two softmaxes; every
// gradient by torch's autograd), the registered op, a shared retrieval query, and errors.
// The kernel itself is tested against the float64 reference in tests/kernels.
//
// Tolerances: float64 throughout; the op and the composite differ in summation order only
// (1e-10 relative to the largest magnitude, absolute below 1). Op harness cases
// (tests/kernels/harness.hpp): chunk_attention_torch.* and, on a GPU, chunk_attention_torch_cuda.*.
#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "ops/chunk_attention.hpp"
#include "ops/chunk_attention_decode.hpp"
#include "tests/ops/torch_harness.hpp"

namespace reach::ops {
namespace {

const auto kF64 = torch::TensorOptions().dtype(torch::kFloat64);

// Composite from the definition; needs at least top_k complete chunks (torch::topk over C).
torch::Tensor composite(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& r, const torch::Tensor& landmarks,
                        const ChunkAttentionOptions& o) {
  const auto& sel = o.selection;
  const int64_t b = q.size(0), hq = q.size(1), n = q.size(2), d = q.size(3);
  const int64_t hkv = k.size(1), s = sel.chunk_size, c = n / s, kk = sel.top_k, g = hq / hkv;
  const double scale = 1.0 / std::sqrt(double(d)), rscale = 1.0 / std::sqrt(double(r.size(3)));
  auto scores = torch::matmul(r, landmarks.transpose(-2, -1)) * rscale;  // [B, Hkv, n, C]
  auto candidate = torch::zeros({n, c}, torch::kBool);
  auto valid = torch::zeros({n, kk}, torch::kBool);
  for (int64_t t = 0; t < n; ++t) {
    const int64_t count = pattern::candidate_chunks(sel, t);
    for (int64_t i = 0; i < count; ++i) candidate[t][i] = true;
    for (int64_t j = 0; j < pattern::selected_chunks(sel, count); ++j) valid[t][j] = true;
  }
  const double inf = std::numeric_limits<double>::infinity();
  auto [top, idx] = torch::topk(scores.masked_fill(candidate.logical_not(), -inf), kk, -1);
  // Softmax over the valid slots; a row without one gets zero weights (and no NaN gradient).
  auto finite = top.masked_fill(valid.logical_not(), 0.0);
  auto e = torch::exp(finite - std::get<0>(finite.max(-1, true)).detach()) * valid;
  auto w = e / e.sum(-1, true).clamp_min(1e-300);
  auto chunks = k.narrow(2, 0, c * s).reshape({b, hkv, c, s * d});
  auto vchunks = v.narrow(2, 0, c * s).reshape({b, hkv, c, s * d});
  auto gather_index = idx.reshape({b, hkv, n * kk, 1}).expand({b, hkv, n * kk, s * d});
  auto kc = torch::gather(chunks, 2, gather_index).reshape({b, hkv, n, kk, s, d});
  auto vc = torch::gather(vchunks, 2, gather_index).reshape({b, hkv, n, kk, s, d});
  auto qg = q.reshape({b, hkv, g, n, d});
  auto z = torch::einsum("bghtd,bgtksd->bghtks", {qg, kc}) * scale;
  auto o_c = torch::einsum("bghtks,bgtksd->bghtkd", {torch::softmax(z, -1), vc});
  return torch::einsum("bgtk,bghtkd->bghtd", {w, o_c}).reshape({b, hq, n, d});
}

// max |a - b| / max(1, max |b|), as harness::Report::max_scaled.
double rel_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(1.0, b.abs().max().item<double>());
}

struct Leaves {
  torch::Tensor q, k, v, r, l;
  std::vector<torch::Tensor*> all() { return {&q, &k, &v, &r, &l}; }
};

Leaves make_leaves(int64_t b, int64_t hq, int64_t hkv, int64_t n, int64_t d, int64_t dr,
                   int64_t s) {
  auto make = [](torch::IntArrayRef shape, double sd) {
    return (torch::randn(shape, kF64) * sd).requires_grad_();
  };
  return {make({b, hq, n, d}, 1), make({b, hkv, n, d}, 1), make({b, hkv, n, d}, 1),
          make({b, hkv, n, dr}, 2), make({b, hkv, n / s, dr}, 1)};
}

void check_against_composite(harness::Report& r) {
  torch::manual_seed(3);
  ChunkAttentionOptions o;
  o.selection = {4, 3, 6};
  Leaves x = make_leaves(2, 4, 2, 38, 8, 6, 4);  // GQA, n not a multiple of S
  const auto w = torch::randn({2, 4, 38, 8}, kF64);
  auto out = chunk_attention(x.q, x.k, x.v, x.r, x.l, o);
  (out * w).sum().backward();
  std::vector<torch::Tensor> ours;
  for (auto* t : x.all()) ours.push_back(t->grad().clone()), t->mutable_grad() = torch::Tensor();
  auto want = composite(x.q, x.k, x.v, x.r, x.l, o);
  (want * w).sum().backward();
  r.max_scaled("out", harness::host_values(out), harness::host_values(want), 1e-10);
  const char* names[] = {"q", "k", "v", "r", "landmarks"};
  for (size_t i = 0; i < ours.size(); ++i) {
    r.max_scaled(std::string("grad ") + names[i], harness::host_values(ours[i]),
                 harness::host_values(x.all()[i]->grad()), 1e-10);
    if (!(ours[i].abs().max().item<double>() > 1e-3)) {
      r.fail(std::string("grad ") + names[i] + " is (nearly) all zero");
    }
  }
}

TEST(ChunkAttentionOp, RegisteredOpMatchesCppApi) {
  torch::manual_seed(4);
  Leaves x = make_leaves(1, 2, 1, 32, 4, 4, 4);
  ChunkAttentionOptions o;
  o.selection = {4, 2, 0, pattern::ChunkBudgetRule::fraction, 0.5, 1};
  o.weighting = kernels::ChunkWeighting::stick_breaking;
  const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("reach::chunk_attention", "");
  auto stack = torch::jit::Stack{x.q,           x.k,          x.v,
                                 x.r,           x.l,          int64_t{4},
                                 int64_t{2},    int64_t{0},   std::string("fraction"),
                                 0.5,           int64_t{1},   std::string("stick_breaking"),
                                 c10::IValue(), c10::IValue()};
  op.callBoxed(&stack);
  const auto via_op = stack[0].toTensor();
  EXPECT_EQ(rel_diff(via_op, chunk_attention(x.q, x.k, x.v, x.r, x.l, o)), 0.0);
  auto [out, indices, weights, lse] = chunk_attention_forward(x.q, x.k, x.v, x.r, x.l, o);
  EXPECT_EQ(indices.sizes(), torch::IntArrayRef({1, 1, 32, 2}));
  EXPECT_EQ(lse.sizes(), torch::IntArrayRef({1, 2, 32, 2}));
  EXPECT_EQ(indices[0][0][3][0].item<int64_t>(), -1);  // t < S: no candidate
  EXPECT_EQ(out[0][0][3].abs().sum().item<double>(), 0.0);
}

// The same tensor as q and r: its gradient is the sum of both.
void check_shared_retrieval_query(harness::Report& r) {
  torch::manual_seed(5);
  ChunkAttentionOptions o;
  o.selection = {4, 2, 0};
  Leaves x = make_leaves(1, 2, 2, 24, 8, 8, 4);
  const auto w = torch::randn({1, 2, 24, 8}, kF64);
  (chunk_attention(x.q, x.k, x.v, x.q, x.l, o) * w).sum().backward();
  const auto shared = x.q.grad().clone();
  x.q.mutable_grad() = torch::Tensor();
  auto rq = x.q.detach().clone().requires_grad_();
  (chunk_attention(x.q, x.k, x.v, rq, x.l, o) * w).sum().backward();
  r.max_scaled("grad q (q = r)", harness::host_values(shared),
               harness::host_values(x.q.grad() + rq.grad()), 1e-12);
}

// float32 on the GPU against float64 on the CPU: 1e-4 relative (float32 accumulation).
void check_cuda_against_cpu(harness::Report& r) {
  if (!torch::cuda::is_available()) return r.skip("no CUDA device");
  torch::manual_seed(7);
  ChunkAttentionOptions o;
  o.selection = {64, 8, 128};
  Leaves x = make_leaves(1, 4, 2, 1000, 64, 64, 64);
  const auto w = torch::randn({1, 4, 1000, 64}, kF64);
  auto out = chunk_attention(x.q, x.k, x.v, x.r, x.l, o);
  (out * w).sum().backward();
  std::vector<torch::Tensor> leaves;
  for (auto* t : x.all()) {
    leaves.push_back(t->detach().to(torch::kCUDA, torch::kFloat32).requires_grad_());
  }
  auto got = chunk_attention(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], o);
  (got * w.to(got.options())).sum().backward();
  r.max_scaled("out", harness::host_values(got), harness::host_values(out), 1e-4);
  const char* names[] = {"q", "k", "v", "r", "landmarks"};
  for (size_t i = 0; i < leaves.size(); ++i) {
    r.max_scaled(std::string("grad ") + names[i], harness::host_values(leaves[i].grad()),
                 harness::host_values(x.all()[i]->grad()), 1e-4);
  }
}

REACH_OP_CASES(chunk_attention_op_cases) {
  registry.add({"chunk_attention", "torch", "f64", "b2_hq4_hkv2_n38_d8_dr6_S4_k3_W6", "fwd_bwd",
                check_against_composite});
  registry.add({"chunk_attention", "torch", "f64", "b1_hq2_hkv2_n24_d8_S4_k2_shared_r", "fwd_bwd",
                check_shared_retrieval_query});
  registry.add({"chunk_attention", "torch_cuda", "f32", "b1_hq4_hkv2_n1000_d64_dr64_S64_k8_W128",
                "fwd_bwd", check_cuda_against_cpu});
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "no error";
}

TEST(ChunkAttentionOp, SequenceShorterThanOneChunkGivesZeros) {
  torch::manual_seed(8);
  ChunkAttentionOptions o;
  o.selection = {8, 2, 0};
  Leaves x = make_leaves(1, 2, 1, 5, 4, 4, 8);  // n = 5 < S: landmarks [1, 1, 0, 4]
  ASSERT_EQ(x.l.size(2), 0);
  auto out = chunk_attention(x.q, x.k, x.v, x.r, x.l, o);
  out.sum().backward();
  EXPECT_EQ(out.abs().max().item<double>(), 0.0);
  for (auto* t : {&x.q, &x.k, &x.v, &x.r}) EXPECT_EQ(t->grad().abs().max().item<double>(), 0.0);
  EXPECT_EQ(x.l.grad().numel(), 0);
}

// Decode: request b's output is row lengths[b] - 1 of the full op on the cached sequence
// (the same float64 arithmetic: 1e-12).
void check_decode_op(harness::Report& report) {
  torch::manual_seed(9);
  ChunkAttentionOptions o;
  o.selection = {4, 3, 6};
  o.weighting = kernels::ChunkWeighting::stick_breaking;
  Leaves x = make_leaves(2, 4, 2, 30, 8, 6, 4);
  const auto full = chunk_attention(x.q, x.k, x.v, x.r, x.l, o).detach();
  const auto lengths = torch::tensor({30, 13}, torch::kLong);
  std::vector<torch::Tensor> q_rows, r_rows;
  for (int64_t b = 0; b < 2; ++b) {
    const int64_t t = lengths[b].item<int64_t>() - 1;
    q_rows.push_back(x.q.detach()[b].select(1, t));  // [Hq, d]
    r_rows.push_back(x.r.detach()[b].select(1, t));  // [Hkv, dr]
  }
  const auto q = torch::stack(q_rows), r = torch::stack(r_rows);
  const auto out =
      chunk_attention_decode(q, r, x.k.detach(), x.v.detach(), x.l.detach(), lengths, o);
  for (int64_t b = 0; b < 2; ++b) {
    const int64_t t = lengths[b].item<int64_t>() - 1;
    report.max_scaled("request " + std::to_string(b) + " vs the full op's row",
                      harness::host_values(out[b]), harness::host_values(full[b].select(1, t)),
                      1e-12);
  }
  // The registered op, with a per-request budget: k = 1 for request 0 equals the full op at k = 1.
  const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("reach::chunk_attention_decode", "");
  auto stack = torch::jit::Stack{q,
                                 r,
                                 x.k.detach(),
                                 x.v.detach(),
                                 x.l.detach(),
                                 lengths,
                                 int64_t{4},
                                 int64_t{3},
                                 int64_t{6},
                                 std::string("fixed"),
                                 1.0,
                                 int64_t{1},
                                 std::string("stick_breaking"),
                                 c10::IValue(),
                                 c10::IValue(),
                                 torch::tensor({1, 3}, torch::kLong),
                                 c10::IValue()};
  op.callBoxed(&stack);
  auto k1 = o;
  k1.selection.top_k = 1;
  const auto full_k1 = chunk_attention(x.q, x.k, x.v, x.r, x.l, k1).detach();
  report.max_scaled("registered op, request 0 (k = 1) vs the full op at k = 1",
                    harness::host_values(stack[0].toTensor()[0]),
                    harness::host_values(full_k1[0].select(1, 29)), 1e-12);
  report.max_scaled("registered op, request 1 (k = 3) vs the full op",
                    harness::host_values(stack[0].toTensor()[1]),
                    harness::host_values(full[1].select(1, 12)), 1e-12);
}

REACH_OP_CASES(chunk_attention_decode_op_cases) {
  registry.add({"chunk_attention_decode", "torch", "f64", "b2_hq4_hkv2_n30_d8_dr6_S4_k3_W6_stick",
                "vs_full_row", check_decode_op});
}

TEST(ChunkAttentionDecodeOp, BadInputsAreClearErrors) {
  ChunkAttentionOptions o;
  o.selection = {4, 2, 0};
  const auto q = torch::randn({2, 2, 4}, kF64), r = torch::randn({2, 1, 4}, kF64);
  const auto k = torch::randn({2, 1, 16, 4}, kF64), l = torch::randn({2, 1, 4, 4}, kF64);
  const auto lengths = torch::tensor({16, 5}, torch::kLong);
  auto run = [&](const torch::Tensor& qq, const torch::Tensor& rr, const torch::Tensor& kk,
                 const torch::Tensor& ll, const torch::Tensor& len) {
    return error_of([&] { chunk_attention_decode(qq, rr, kk, kk, ll, len, o); });
  };
  auto has = [](const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
  };
  EXPECT_EQ(run(q, r, k, l, lengths), "no error");
  EXPECT_TRUE(has(run(q.unsqueeze(2).unsqueeze(2), r, k, l, lengths),
                  "q must be [batch, heads, head_dim] or [batch, heads, queries, head_dim]"));
  // Several queries per request: r must carry them too.
  EXPECT_TRUE(has(run(q.unsqueeze(2), r, k, l, lengths),
                  "r must be [batch, kv_heads, queries, retrieval_dim] = [2, 1, 1, *]"));
  EXPECT_EQ(run(q.unsqueeze(2).expand({2, 2, 5, 4}).contiguous(),
                r.unsqueeze(2).expand({2, 1, 5, 4}).contiguous(), k, l, lengths),
            "no error");
  EXPECT_TRUE(has(run(q, r, k, l, torch::tensor({16}, torch::kLong)),
                  "lengths must be a 1-D tensor of batch = 2 entries"));
  EXPECT_TRUE(has(run(q, r, k, l, torch::tensor({16.0, 5.0})), "lengths must be integers"));
  EXPECT_TRUE(has(run(q, r, k, l, torch::tensor({17, 5}, torch::kLong)),
                  "request 0: length 17 is outside 1..capacity (16)"));
  EXPECT_TRUE(has(run(q, r, k, l.narrow(2, 0, 3), lengths),
                  "landmark capacity (3) must be >= capacity / chunk size (4)"));
  EXPECT_TRUE(has(run(q, r.narrow(2, 0, 2), k, l, lengths), "landmarks must be [batch, kv_heads"));
  EXPECT_TRUE(has(run(q.to(torch::kFloat32), r, k, l, lengths), "must share one dtype"));
}

TEST(ChunkAttentionOp, BadInputsAreClearErrors) {
  torch::manual_seed(6);
  Leaves x = make_leaves(1, 2, 1, 16, 4, 4, 4);
  ChunkAttentionOptions o;
  o.selection = {4, 2, 0};
  auto run = [&](const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                 const torch::Tensor& r, const torch::Tensor& l, ChunkAttentionOptions opt) {
    return error_of([&] { chunk_attention(q, k, v, r, l, opt); });
  };
  auto has = [](const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
  };
  EXPECT_EQ(run(x.q, x.k, x.v, x.r, x.l, o), "no error");
  auto bad = o;
  bad.selection.chunk_size = 0;
  EXPECT_TRUE(has(run(x.q, x.k, x.v, x.r, x.l, bad), "chunk size S must be >= 1, got 0"));
  bad = o;
  bad.selection.top_k = 0;
  EXPECT_TRUE(has(run(x.q, x.k, x.v, x.r, x.l, bad), "top-k must be >= 1, got 0"));
  bad = o;
  bad.selection.chunk_size = 8;  // 2 chunks, but 4 landmarks given
  EXPECT_TRUE(has(run(x.q, x.k, x.v, x.r, x.l, bad),
                  "landmarks must be [batch, kv_heads, n / "
                  "chunk_size, retrieval_dim] = [1, 1, 2, 4]"));
  const auto k3 = torch::randn({1, 3, 16, 4}, kF64);
  EXPECT_TRUE(
      has(run(x.q, k3, k3, x.r, x.l, o), "query heads (2) must be a multiple of kv heads (3)"));
  EXPECT_TRUE(has(run(x.q, x.k, x.v.narrow(3, 0, 2), x.r, x.l, o), "v must have k's shape"));
  EXPECT_TRUE(
      has(run(x.q, x.k, x.v, x.r.narrow(2, 0, 8), x.l, o), "r must be [batch, kv_heads, n"));
  EXPECT_TRUE(has(run(x.q.squeeze(0), x.k, x.v, x.r, x.l, o), "q must have rank 4"));
  EXPECT_TRUE(has(run(x.q, x.k.to(torch::kFloat32), x.v, x.r, x.l, o), "must share one dtype"));
  EXPECT_TRUE(
      has(run(x.q.to(torch::kInt), x.k, x.v, x.r, x.l, o), "dtype must be float32 or float64"));
  const auto meta = torch::TensorOptions().dtype(torch::kFloat64).device(torch::kMeta);
  EXPECT_TRUE(
      has(run(x.q, x.k, x.v, x.r, torch::empty({1, 1, 4, 4}, meta), o), "must be on one device"));
  EXPECT_TRUE(has(run(torch::empty({1, 2, 16, 4}, meta), torch::empty({1, 1, 16, 4}, meta),
                      torch::empty({1, 1, 16, 4}, meta), torch::empty({1, 1, 16, 4}, meta),
                      torch::empty({1, 1, 4, 4}, meta), o),
                  "no kernel for"));
  EXPECT_TRUE(has(run(x.q, x.k, x.v, x.r, x.l,
                      [&] {
                        auto f = o;
                        f.scale = -1.0;
                        return f;
                      }()),
                  "scale must be positive"));
  const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("reach::chunk_attention", "");
  auto stack = torch::jit::Stack{x.q,           x.k,          x.v,
                                 x.r,           x.l,          int64_t{4},
                                 int64_t{2},    int64_t{0},   std::string("dynamic"),
                                 1.0,           int64_t{1},   std::string("softmax"),
                                 c10::IValue(), c10::IValue()};
  EXPECT_TRUE(has(error_of([&] { op.callBoxed(&stack); }), "unknown chunk budget rule 'dynamic'"));
}

}  // namespace
}  // namespace reach::ops
