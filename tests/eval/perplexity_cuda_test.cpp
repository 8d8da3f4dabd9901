// `reach eval --device cuda` agrees with the CPU: the same model and tokens, evaluated on both
// in fp32, give the same NLL per token within 1e-4 relative. Why that bound: both sum the same
// float32 products in different orders (GPU matmul and attention kernels vs the CPU's), whose
// rounding differs by a few float32 ulps per dot product (~1e-6 relative over d = 32..128),
// and the NLL is a mean of thousands of such terms; 1e-4 leaves two orders of margin yet
// catches a wrong mask, offset or position (those move the NLL by > 1e-2). Skips without a GPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "eval/perplexity.hpp"
#include "model/gpt.hpp"

namespace reach::eval {
namespace {

void expect_cpu_and_cuda_agree(const std::string& attention, const std::string& schedule) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  model::ModelConfig config = model::preset("micro");
  config.attention = model::parse_attention_family(attention);
  config.schedule = model::parse_schedule(schedule);
  config.reach = 64;
  torch::manual_seed(3);
  model::Gpt net(config);
  net->eval();
  // Random tokens (never a constant stream), two documents of different lengths.
  std::vector<std::vector<int64_t>> docs;
  for (const int64_t n : {300, 200}) {
    const auto t = torch::randint(0, config.vocab_size, {n}, torch::kInt64);
    docs.emplace_back(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + n);
  }
  const std::vector<int64_t> lengths{16, 64, 128};
  const auto cpu =
      evaluate_lengths([&](const torch::Tensor& x) { return net(x); }, docs, lengths, 1024);
  net->to(torch::Device(torch::kCUDA, 0));
  const auto cuda = evaluate_lengths(
      [&](const torch::Tensor& x) { return net(x.to(torch::Device(torch::kCUDA, 0))); }, docs,
      lengths, 1024);
  ASSERT_EQ(cpu.size(), cuda.size());
  for (size_t i = 0; i < cpu.size(); ++i) {
    EXPECT_EQ(cpu[i].tokens, cuda[i].tokens);
    EXPECT_NEAR(cuda[i].mean_nll, cpu[i].mean_nll, 1e-4 * cpu[i].mean_nll)
        << attention << " at length " << lengths[i];
  }
}

TEST(PerplexityCuda, DenseAgreesWithTheCpu) { expect_cpu_and_cuda_agree("dense", "stagger"); }
TEST(PerplexityCuda, FibonacciStaggerAgreesWithTheCpu) {
  expect_cpu_and_cuda_agree("fibonacci", "stagger");
}
TEST(PerplexityCuda, LearnedScheduleAgreesWithTheCpu) {
  expect_cpu_and_cuda_agree("fibonacci", "learned");
}

}  // namespace
}  // namespace reach::eval
