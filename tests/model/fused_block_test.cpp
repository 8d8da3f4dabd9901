// The model's fused GPU path (ops/block_ops.hpp: RoPE split, residual add + LayerNorm or RMSNorm,
// SwiGLU, bias + GELU) against its tensor-op path on the same weights and tokens: the LayerNorm +
// GELU model, and the paper model's kind (RMSNorm, SwiGLU, grouped-query attention). On the CPU the
// fused ops are never used, switched on or not (the model keeps the tensor ops there: the same
// numbers, bit for bit), and calling them is a clear error. GPU cases (suite FusedBlockCuda, label
// gpu) skip without a device.
//
// Bounds. Float32 on the GPU, no autocast: logits and every parameter gradient within 1e-4
// relative L2 of the unfused path: both are float32 with different operation orders (the
// fused norms sum a row in a warp, their weight gradients per block), ~1e-6 per op through 4
// blocks and a backward; a wrong term (a missed residual, a transposed rotation) is O(1).
// Under bf16 autocast (the training setting) the two paths round in different places (the
// fused SwiGLU rounds silu(a) * b once, the tensor ops silu(a) and the product each), so they
// are judged against the float32 unfused result as the kernel tests judge bf16 outputs: the
// fused path's rel. L2 error within 2x the unfused bf16 path's + 1e-3.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <vector>

#include "model/gpt.hpp"
#include "ops/block_ops.hpp"
#include "train/device.hpp"

namespace reach::model {
namespace {

double rel_l2(const torch::Tensor& got, const torch::Tensor& want) {
  return (got.to(torch::kFloat64) - want.to(torch::kFloat64)).norm().item<double>() /
         want.to(torch::kFloat64).norm().item<double>();
}

TEST(FusedBlock, CpuTensorsAreAClearError) {
  const auto qkv = torch::randn({1, 4, 3 * 2 * 8});
  const auto table = torch::randn({4, 4});
  EXPECT_THROW(
      {
        try {
          ops::rope_split(qkv, 2, table, table);
        } catch (const std::invalid_argument& e) {
          EXPECT_NE(std::string(e.what()).find("CUDA"), std::string::npos) << e.what();
          throw;
        }
      },
      std::invalid_argument);
  EXPECT_THROW(
      ops::add_layer_norm(torch::randn({3, 8}), {}, torch::ones({8}), torch::zeros({8}), 1e-5),
      std::invalid_argument);
  EXPECT_THROW(ops::add_rms_norm(torch::randn({3, 8}), {}, torch::ones({8}), 1e-6),
               std::invalid_argument);
  EXPECT_THROW(ops::swiglu(torch::randn({3, 8}), torch::randn({3, 8})), std::invalid_argument);
  EXPECT_THROW(ops::bias_gelu(torch::randn({3, 8}), torch::randn({8})), std::invalid_argument);
  EXPECT_FALSE(ops::add_layer_norm_supports(torch::randn({3, 8}), 8));
  EXPECT_FALSE(ops::swiglu_supports(torch::randn({3, 8}), torch::randn({3, 8})));
  EXPECT_FALSE(ops::bias_gelu_supports(torch::randn({3, 8}), torch::randn({8})));
  EXPECT_THROW(ops::linear_bias(torch::randn({3, 8}), torch::randn({4, 8}), torch::randn({4})),
               std::invalid_argument);
  EXPECT_FALSE(
      ops::linear_bias_supports(torch::randn({3, 8}), torch::randn({4, 8}), torch::randn({4})));
}

TEST(FusedBlock, OnByDefaultWhereBuiltAndNeverOnTheCpu) {
  if (std::getenv("REACH_FUSED_KERNELS") == nullptr) {
    EXPECT_EQ(ops::fused_block_kernels_enabled(), ops::fused_block_kernels_built());
  }
  // Switched on, a CPU model still takes the tensor ops: the same logits and gradients as
  // switched off, bit for bit; LayerNorm + GELU, and RMSNorm + SwiGLU + grouped-query attention.
  auto layer_norm = preset("micro");
  auto rms_norm = layer_norm;
  rms_norm.norm = Norm::rmsnorm;
  rms_norm.mlp = Mlp::swiglu;
  rms_norm.kv_heads = 1;
  for (auto c : {layer_norm, rms_norm}) {
    c.reach = 24;
    torch::manual_seed(5);
    Gpt net(c);
    const auto tokens = torch::randint(0, 256, {2, 24}, torch::kInt64);
    const auto run = [&](bool fused) {
      ops::set_fused_block_kernels(fused);
      net->zero_grad();
      const auto logits = net(tokens);
      logits.logsumexp(-1).mean().backward();
      ops::set_fused_block_kernels(false);
      std::vector<torch::Tensor> out{logits.detach().clone()};
      for (const auto& p : net->parameters()) out.push_back(p.grad().clone());
      return out;
    };
    const auto off = run(false), on = run(true);
    for (size_t i = 0; i < off.size(); ++i) {
      EXPECT_TRUE(torch::equal(off[i], on[i])) << to_string(c.norm) << " tensor " << i;
    }
  }
}

// Logits and every parameter's gradient of one forward + backward.
struct Pass {
  torch::Tensor logits;
  std::vector<torch::Tensor> grads;
};

Pass run_pass(Gpt& net, const torch::Tensor& tokens, bool fused, bool bf16) {
  ops::set_fused_block_kernels(fused);
  net->zero_grad();
  torch::Tensor logits;
  {
    const train::Bf16Autocast autocast(bf16);
    logits = net(tokens);
  }
  logits.to(torch::kFloat32).logsumexp(-1).mean().backward();
  ops::set_fused_block_kernels(false);
  Pass pass{logits.detach().to(torch::kFloat32).clone(), {}};
  for (const auto& p : net->parameters()) pass.grads.push_back(p.grad().clone());
  return pass;
}

// A small CUDA model of config c (head_dim 64: a CUDA-kernel size) and tokens for it.
std::pair<Gpt, torch::Tensor> cuda_model(ModelConfig c) {
  c.reach = 96;
  torch::manual_seed(3);
  Gpt net(c);
  net->to(torch::kCUDA);
  return {net, torch::randint(0, 256, {2, 96}, torch::kInt64).to(torch::kCUDA)};
}

// float32: the fused path within 1e-4 of the tensor ops, logits and every gradient.
void expect_fused_matches(const ModelConfig& c, const std::string& what) {
  auto [net, tokens] = cuda_model(c);
  const auto want = run_pass(net, tokens, false, false);
  const auto got = run_pass(net, tokens, true, false);
  EXPECT_LT(rel_l2(got.logits, want.logits), 1e-4) << what;
  const auto names = net->named_parameters().keys();
  for (size_t i = 0; i < want.grads.size(); ++i) {
    EXPECT_LT(rel_l2(got.grads[i], want.grads[i]), 1e-4) << what << " " << names[i];
  }
}

// The paper model's kind, small: RMSNorm, SwiGLU, 2 query heads over 1 K/V head, no biases.
ModelConfig paper_kind(AttentionFamily attention) {
  auto c = preset("tiny");  // 4 layers, d 128
  c.heads = 2;              // head_dim 64
  c.kv_heads = 1;
  c.norm = Norm::rmsnorm;
  c.mlp = Mlp::swiglu;  // hidden 342: rows of 684 bytes in bf16, no 16-byte multiple
  c.bias = false;
  c.attention = attention;
  return c;
}

bool skip_without_cuda_kernels() {
  return !torch::cuda::is_available() || !ops::fused_block_kernels_built();
}

TEST(FusedBlockCuda, MatchesTheTensorOpPath) {
  if (skip_without_cuda_kernels()) GTEST_SKIP() << "no CUDA device or no CUDA kernels";
  for (const auto attention : {AttentionFamily::dense, AttentionFamily::fibonacci}) {
    auto c = preset("tiny");  // 4 layers, d 128, 4 heads: head_dim 32 is no CUDA-kernel size
    c.heads = 2;              // head_dim 64
    c.attention = attention;
    expect_fused_matches(c, to_string(attention));
  }
}

TEST(FusedBlockCuda, RmsNormSwigluGqaMatchesTheTensorOpPath) {
  if (skip_without_cuda_kernels()) GTEST_SKIP() << "no CUDA device or no CUDA kernels";
  for (const auto attention : {AttentionFamily::dense, AttentionFamily::fibonacci}) {
    expect_fused_matches(paper_kind(attention), "rmsnorm swiglu gqa " + to_string(attention));
  }
}

// Under bf16 autocast, config c's fused path against the float32 tensor-op path, no worse than
// the bf16 tensor-op path (the bound in the header).
void expect_bf16_no_worse(const ModelConfig& c, const std::string& what) {
  auto [net, tokens] = cuda_model(c);
  const auto exact = run_pass(net, tokens, false, false);
  const auto unfused = run_pass(net, tokens, false, true);
  const auto fused = run_pass(net, tokens, true, true);
  const auto bound = [](double unfused_error) { return 2 * unfused_error + 1e-3; };
  EXPECT_LT(rel_l2(fused.logits, exact.logits), bound(rel_l2(unfused.logits, exact.logits)))
      << what;
  const auto names = net->named_parameters().keys();
  for (size_t i = 0; i < exact.grads.size(); ++i) {
    EXPECT_LT(rel_l2(fused.grads[i], exact.grads[i]),
              bound(rel_l2(unfused.grads[i], exact.grads[i])))
        << what << " " << names[i];
  }
}

// LayerNorm + GELU with biases (the fused bias + GELU: fc's bias added in float32 before gelu,
// its gradient summed from dh before rounding; the tensor ops add it in the bf16 product).
TEST(FusedBlockCuda, LayerNormGeluUnderBf16AutocastIsNoWorseThanTheTensorOps) {
  if (skip_without_cuda_kernels()) GTEST_SKIP() << "no CUDA device or no CUDA kernels";
  for (const auto attention : {AttentionFamily::dense, AttentionFamily::fibonacci}) {
    auto c = preset("tiny");  // GELU MLP of hidden 512, biases
    c.heads = 2;              // head_dim 64
    c.attention = attention;
    expect_bf16_no_worse(c, "layernorm gelu " + to_string(attention));
  }
}

TEST(FusedBlockCuda, RmsNormSwigluGqaUnderBf16AutocastIsNoWorseThanTheTensorOps) {
  if (skip_without_cuda_kernels()) GTEST_SKIP() << "no CUDA device or no CUDA kernels";
  for (const auto attention : {AttentionFamily::dense, AttentionFamily::fibonacci}) {
    expect_bf16_no_worse(paper_kind(attention), to_string(attention));
  }
}

// ops::linear_bias against LibTorch's linear under bf16 autocast on the same inputs: the output
// and the input / weight gradients are the same matrix products (equal to bf16 rounding: 2^-8
// relative L2, expected 0); the bias gradient is within float32 summation error (1e-6) of the
// float64 column sums of the bf16 output gradient, where torch's is rounded to bf16 (within 2^-8).
TEST(FusedBlockCuda, LinearBiasMatchesTheAutocastLinear) {
  if (skip_without_cuda_kernels()) GTEST_SKIP() << "no CUDA device or no CUDA kernels";
  torch::manual_seed(5);
  const auto opts = torch::TensorOptions().device(torch::kCUDA);
  const auto x0 = torch::randn({1000, 96}, opts);
  const auto w0 = torch::randn({40, 96}, opts) * 0.1, b0 = torch::randn({40}, opts);
  const auto dy = torch::randn({1000, 40}, opts).to(torch::kBFloat16);
  std::vector<torch::Tensor> got, want;
  for (const bool fused : {true, false}) {
    auto x = x0.to(torch::kBFloat16).requires_grad_(true);
    auto w = w0.clone().requires_grad_(true), b = b0.clone().requires_grad_(true);
    torch::Tensor y;
    {
      const train::Bf16Autocast autocast(true);
      ASSERT_EQ(ops::linear_bias_supports(x, w, b), ops::fused_block_kernels_enabled());
      y = fused ? ops::linear_bias(x, w, b) : torch::nn::functional::linear(x, w, b);
    }
    y.backward(dy);
    (fused ? got : want) = std::vector<torch::Tensor>{y.detach(), x.grad(), w.grad(), b.grad()};
  }
  EXPECT_EQ(got[0].scalar_type(), torch::kBFloat16);
  EXPECT_LT(rel_l2(got[0], want[0]), std::ldexp(1.0, -8)) << "y";
  EXPECT_LT(rel_l2(got[1], want[1]), std::ldexp(1.0, -8)) << "dx";
  EXPECT_LT(rel_l2(got[2], want[2]), std::ldexp(1.0, -8)) << "dw";
  EXPECT_EQ(got[3].scalar_type(), torch::kFloat32);
  EXPECT_LT(rel_l2(got[3], dy.to(torch::kFloat64).sum(0)), 1e-6) << "db against float64";
  EXPECT_LT(rel_l2(got[3], want[3]), std::ldexp(1.0, -8)) << "db against torch";
  EXPECT_THROW(ops::linear_bias(x0, w0.t(), b0), std::exception);  // [out, in] mismatch
}

}  // namespace
}  // namespace reach::model
