#include "train/device.hpp"

#include <gtest/gtest.h>

#include "train/train_config.hpp"

namespace reach::train {
namespace {

void expect_config_error(const std::vector<std::string>& sets, const std::string& needle) {
  try {
    parse_train_config("", sets);
    ADD_FAILURE() << "expected an error mentioning " << needle;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

bool have_gpu() { return resolve_device("auto").is_cuda(); }

TEST(TrainDevice, ConfigKeysParseAndRoundTrip) {
  const auto c =
      parse_train_config("[train]\ndevice = \"cuda:1\"\nprecision = \"bf16\"\npeak_tflops = 500\n",
                         {"train.profile_steps=3"});
  EXPECT_EQ(c.device, "cuda:1");
  EXPECT_EQ(c.precision, "bf16");
  EXPECT_DOUBLE_EQ(c.peak_tflops, 500);
  EXPECT_EQ(c.profile_steps, 3);
  EXPECT_EQ(to_toml(parse_train_config(to_toml(c), {})), to_toml(c));
  const auto defaults = parse_train_config("", {});
  EXPECT_EQ(defaults.device, "auto");
  EXPECT_EQ(defaults.precision, "auto");
}

TEST(TrainDevice, BadValuesNameTheKey) {
  expect_config_error({"train.device=gpu"}, "train.device must be auto, cpu, cuda or cuda:N");
  expect_config_error({"train.device=cuda:x"}, "train.device");
  expect_config_error({"train.device=cuda:"}, "train.device");
  expect_config_error({"train.precision=fp16"}, "train.precision must be auto, fp32 or bf16");
  expect_config_error({"train.device=cpu", "train.precision=bf16"},
                      "train.precision = 'bf16' needs a CUDA device");
  expect_config_error({"train.peak_tflops=-1"}, "train.peak_tflops");
  expect_config_error({"train.profile_steps=-2"}, "train.profile_steps");
  // A bare number is read as its text, then rejected by name.
  expect_config_error({"train.device=3"},
                      "train.device must be auto, cpu, cuda or cuda:N, got '3'");
}

TEST(TrainDevice, AutoIsTheCpuWithoutAGpuAndCudaIsAClearError) {
  EXPECT_EQ(resolve_device("cpu"), torch::Device(torch::kCPU));
  EXPECT_FALSE(resolve_bf16("auto", torch::kCPU));
  EXPECT_FALSE(resolve_bf16("fp32", torch::kCPU));
  EXPECT_THROW(resolve_bf16("bf16", torch::kCPU), std::invalid_argument);
  if (have_gpu()) GTEST_SKIP() << "a GPU is visible: the no-GPU errors cannot happen";
  EXPECT_EQ(resolve_device("auto"), torch::Device(torch::kCPU));
  for (const std::string spec : {"cuda", "cuda:0"}) {
    try {
      resolve_device(spec);
      ADD_FAILURE() << spec << " resolved without a GPU";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("train.device = '" + spec + "'"), std::string::npos)
          << e.what();
    }
  }
}

TEST(TrainDevice, PeakFlopsFromTheGpuName) {
  EXPECT_DOUBLE_EQ(peak_flops_from_name("NVIDIA H100 80GB HBM3", true), 989.4e12);
  EXPECT_DOUBLE_EQ(peak_flops_from_name("NVIDIA H100 PCIe", true), 756e12);
  EXPECT_DOUBLE_EQ(peak_flops_from_name("NVIDIA H200", true), 989.4e12);
  EXPECT_DOUBLE_EQ(peak_flops_from_name("NVIDIA H100 80GB HBM3", false), 66.9e12);
  EXPECT_EQ(peak_flops_from_name("cpu", true), 0);
  EXPECT_EQ(peak_flops_from_name("Some Future GPU", true), 0);
}

TEST(TrainDevice, KeysPerQueryCountWhatIsAttended) {
  // Dense causal over 4 positions: 1 + 2 + 3 + 4 keys.
  EXPECT_DOUBLE_EQ(mean_keys_per_query(model::AttentionFamily::dense, 2, {}, 4), 10.0 / 4);
  // Window 2: 1, 2, 2, 2 keys; offset 3 adds a key for the last query only.
  EXPECT_DOUBLE_EQ(mean_keys_per_query(model::AttentionFamily::window, 2, {}, 4), 7.0 / 4);
  EXPECT_DOUBLE_EQ(mean_keys_per_query(model::AttentionFamily::fibonacci, 2, {3}, 4), 8.0 / 4);
  EXPECT_DOUBLE_EQ(mean_keys_per_query(model::AttentionFamily::fibonacci, 2, {3, 5}, 4), 8.0 / 4);
  // A window longer than the sequence is dense.
  EXPECT_DOUBLE_EQ(mean_keys_per_query(model::AttentionFamily::window, 64, {}, 4), 10.0 / 4);
}

TEST(TrainDevice, ModelFlopsAreSixPerWeightPlusAttention) {
  auto c = model::preset("micro");
  c.attention = model::AttentionFamily::dense;
  model::Gpt net(c);
  double weights = 0;
  for (const auto& p : net->parameters()) {
    if (p.dim() == 2) weights += static_cast<double>(p.numel());
  }
  const auto flops = training_flops_per_token(*net, 16);
  EXPECT_DOUBLE_EQ(flops.matmul, 6 * weights);
  EXPECT_DOUBLE_EQ(flops.attention, 12.0 * c.d_model * c.layers * 8.5);
  EXPECT_DOUBLE_EQ(flops.total(), flops.matmul + flops.attention);
}

TEST(TrainDevice, OptimizerStateKeyFindsTheOptimizersState) {
  auto p = torch::ones({3}, torch::requires_grad());
  torch::optim::AdamW optimizer({p}, torch::optim::AdamWOptions(0.1));
  p.sum().backward();
  optimizer.step();
  EXPECT_NE(optimizer.state().find(optimizer_state_key(p)), optimizer.state().end());
}

TEST(TrainDevice, ClipGradNormOnDeviceMatchesTorchsWithMixedDtypes) {
  torch::manual_seed(5);
  // float32 weights and a float64 scalar (a learned alpha), clipped (norm > 1) and not.
  for (const double max_norm : {1.0, 1e6}) {
    std::vector<torch::Tensor> mine = {torch::randn({7, 5}), torch::randn({3}),
                                       torch::randn({}, torch::kFloat64)};
    std::vector<torch::Tensor> theirs;
    for (auto& p : mine) {
      p.requires_grad_();
      p.mutable_grad() = torch::randn_like(p) * 3;
      theirs.push_back(p.detach().clone().requires_grad_());
      theirs.back().mutable_grad() = p.grad().clone();
    }
    const double expected = torch::nn::utils::clip_grad_norm_(theirs, max_norm);
    const auto total = clip_grad_norm_on_device(mine, max_norm);
    EXPECT_NEAR(total.item<double>(), expected, 1e-5 * expected);
    for (size_t t = 0; t < mine.size(); ++t) {
      EXPECT_EQ(mine[t].grad().scalar_type(), theirs[t].grad().scalar_type());
      EXPECT_TRUE(torch::allclose(mine[t].grad(), theirs[t].grad(), 1e-5, 1e-6)) << t;
    }
  }
}

// GPU-only from here: each test skips without a CUDA device.

TEST(TrainDeviceGpu, FusedAdamWMatchesAdamW) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU";
  if (!FusedAdamW::available(torch::kCUDA)) GTEST_SKIP() << "LibTorch < 2.1: no fused AdamW";
  torch::manual_seed(3);
  // A float32 weight and a float64 scalar (as a learned alpha) in one group.
  const auto init = torch::randn({64, 33}, torch::kFloat64);
  const auto init_scalar = torch::randn({}, torch::kFloat64);
  std::vector<torch::Tensor> reference = {init.to(torch::kCUDA, torch::kFloat32).requires_grad_(),
                                          init_scalar.to(torch::kCUDA).requires_grad_()};
  std::vector<torch::Tensor> fused = {init.to(torch::kCUDA, torch::kFloat32).requires_grad_(),
                                      init_scalar.to(torch::kCUDA).requires_grad_()};
  const auto options = torch::optim::AdamWOptions(0.01).betas({0.9, 0.95}).weight_decay(0.1);
  torch::optim::AdamW plain_optimizer(reference, options);
  torch::optim::AdamW fused_optimizer(fused, options);
  FusedAdamW fused_step(fused_optimizer);
  for (int step = 0; step < 5; ++step) {
    const auto target = torch::randn({64, 33}, torch::kCUDA);
    const auto target_scalar =
        torch::randn({}, torch::TensorOptions(torch::kCUDA).dtype(torch::kFloat64));
    for (auto* ps : {&reference, &fused}) {
      for (auto& p : *ps) p.mutable_grad() = torch::Tensor();
      ((*ps)[0] - target).square().sum().backward();
      ((*ps)[1] - target_scalar).square().backward();
    }
    plain_optimizer.step();
    fused_step.step();
  }
  EXPECT_LT((reference[0] - fused[0]).abs().max().item<double>(), 1e-5);
  EXPECT_EQ(fused[1].scalar_type(), torch::kFloat64);
  EXPECT_LT((reference[1] - fused[1]).abs().item<double>(), 1e-12);
  for (const auto& p : fused) {
    const auto& state = static_cast<torch::optim::AdamWParamState&>(
        *fused_optimizer.state().find(optimizer_state_key(p))->second);
    EXPECT_EQ(state.step(), 5);
  }
}

TEST(TrainDeviceGpu, Bf16AutocastRunsTheSparseModel) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU";
  // attention/schedule; the learned schedule's alpha lives on the GPU with the model.
  for (const std::string run : {"fibonacci/stagger", "fibonacci/learned", "dense/stagger"}) {
    const std::string attention = run.substr(0, run.find('/'));
    auto c = model::preset("micro");
    c.attention = model::parse_attention_family(attention);
    c.schedule = model::parse_schedule(run.substr(run.find('/') + 1));
    c.reach = 64;
    c.d_model = 128;  // head_dim 64: the CUDA kernels take 64 or 128
    model::Gpt net(c);
    net->to(torch::kCUDA);
    const auto tokens =
        torch::randint(0, 256, {2, 64}, torch::TensorOptions(torch::kLong).device(torch::kCUDA));
    torch::Tensor logits;
    {
      const Bf16Autocast autocast(true);
      logits = net(tokens);
    }
    EXPECT_EQ(logits.scalar_type(), torch::kBFloat16) << run;
    logits.to(torch::kFloat32).logsumexp(-1).mean().backward();
    for (const auto& p : net->parameters()) {
      ASSERT_TRUE(p.grad().defined()) << run;
      EXPECT_EQ(p.grad().scalar_type(), p.scalar_type()) << run;  // float32; theta float64
      EXPECT_TRUE(p.grad().is_cuda()) << run;
      EXPECT_TRUE(torch::isfinite(p.grad()).all().item<bool>()) << run;
    }
    // One optimizer step as the trainer takes it, then the updated model runs again.
    torch::optim::AdamW optimizer(net->parameters(), torch::optim::AdamWOptions(1e-3));
    if (FusedAdamW::available(torch::kCUDA)) {
      FusedAdamW(optimizer).step();
    } else {
      optimizer.step();
    }
    torch::NoGradGuard no_grad;
    const Bf16Autocast autocast(true);
    EXPECT_TRUE(torch::isfinite(net(tokens)).all().item<bool>()) << run;
  }
}

}  // namespace
}  // namespace reach::train
