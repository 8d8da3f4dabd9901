// The model's fused GPU path (ops/block_ops.hpp: RoPE split, residual add + LayerNorm) against
// its tensor-op path on the same weights and tokens. On the CPU the fused ops are never used,
// switched on or not (the model keeps the tensor ops there: the same numbers, bit for bit), and
// calling them is a clear error. GPU cases (suite FusedBlockCuda, label gpu) skip without a device.
//
// Bound (float32 on the GPU, no autocast): logits and every parameter gradient within 1e-4
// relative L2 of the unfused path: both are float32 with different operation orders (the
// fused LayerNorm sums a row in a warp, dgamma/dbeta per block), ~1e-6 per op through 4
// blocks and a backward; a wrong term (a missed residual, a transposed rotation) is O(1).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>

#include "model/gpt.hpp"
#include "ops/block_ops.hpp"

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
  EXPECT_FALSE(ops::add_layer_norm_supports(torch::randn({3, 8}), 8));
}

TEST(FusedBlock, OnByDefaultWhereBuiltAndNeverOnTheCpu) {
  if (std::getenv("REACH_FUSED_KERNELS") == nullptr) {
    EXPECT_EQ(ops::fused_block_kernels_enabled(), ops::fused_block_kernels_built());
  }
  // Switched on, a CPU model still takes the tensor ops: the same logits as switched off.
  auto c = preset("micro");
  c.reach = 24;
  torch::manual_seed(5);
  Gpt net(c);
  const auto tokens = torch::randint(0, 256, {2, 24}, torch::kInt64);
  ops::set_fused_block_kernels(false);
  const auto off = net(tokens);
  ops::set_fused_block_kernels(true);
  const auto on = net(tokens);
  ops::set_fused_block_kernels(false);
  EXPECT_TRUE(torch::equal(off, on));
}

TEST(FusedBlockCuda, MatchesTheTensorOpPath) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  if (!ops::fused_block_kernels_built()) GTEST_SKIP() << "built without the CUDA kernels";
  for (const auto attention : {AttentionFamily::dense, AttentionFamily::fibonacci}) {
    auto c = preset("tiny");  // 4 layers, d 128, 4 heads: head_dim 32 is no CUDA-kernel size
    c.heads = 2;              // head_dim 64
    c.attention = attention;
    c.reach = 96;
    torch::manual_seed(3);
    Gpt net(c);
    net->to(torch::kCUDA);
    const auto tokens = torch::randint(0, 256, {2, 96}, torch::kInt64).to(torch::kCUDA);
    auto run = [&](bool fused) {
      ops::set_fused_block_kernels(fused);
      net->zero_grad();
      const auto logits = net(tokens);
      logits.logsumexp(-1).mean().backward();
      std::vector<torch::Tensor> grads;
      for (const auto& p : net->parameters()) grads.push_back(p.grad().clone());
      return std::make_pair(logits.detach().clone(), grads);
    };
    const auto [want_logits, want_grads] = run(false);
    const auto [got_logits, got_grads] = run(true);
    ops::set_fused_block_kernels(false);
    EXPECT_LT(rel_l2(got_logits, want_logits), 1e-4) << to_string(attention);
    const auto names = net->named_parameters().keys();
    for (size_t i = 0; i < want_grads.size(); ++i) {
      EXPECT_LT(rel_l2(got_grads[i], want_grads[i]), 1e-4)
          << to_string(attention) << " " << names[i];
    }
  }
}

}  // namespace
}  // namespace reach::model
