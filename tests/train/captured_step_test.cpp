// The training step captured in a CUDA graph (train/captured_step.hpp) against the same steps run
// eagerly, and the loop's use of it. On the CPU: a model there cannot be captured and says why,
// and the loop with cuda_graph on trains as without it (bit for bit). GPU cases (suite
// CapturedStepCuda) skip without a device.
//
// Bound of the GPU comparison: the graph replays the eager step's kernels in the eager order,
// so the only differences are the nondeterministic ones of both paths (the embedding gradient's
// atomic adds): a step's loss within 1e-3 relative of the eager run's over 8 steps, and the
// weights after them within 1e-3 relative L2. A replay that skipped the optimizer would leave
// the loss near its first value (the eager losses fall by > 2% over these steps: checked), one
// that read a stale batch or learning rate would leave the next loss off by far more than 1e-3.
#include "train/captured_step.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "model/gpt.hpp"
#include "train/device.hpp"
#include "train/loop.hpp"
#include "train/optimizer.hpp"

namespace reach::train {
namespace {

model::ModelConfig small_config() {
  auto c = model::preset("micro");
  c.vocab_size = 64;
  c.d_model = 128;  // head_dim 64: the CUDA tensor-core attention kernels' shape
  c.heads = 2;
  c.reach = 64;
  return c;
}

// Steps of batch 4 x 64, each batch drawn from a generator seeded by its step: rows counting up
// (mod 64) from a random start, so the next token is learnable and the loss falls within steps.
torch::Tensor batch_of(int64_t step) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(1000 + step));
  const auto start = torch::randint(0, 64, {4, 1}, g, torch::kInt64);
  return (start + torch::arange(65, torch::kInt64).view({1, 65})).remainder(64);
}

// The loop's step: forward + loss under bf16 autocast, backward, clipping, fused AdamW at lr.
StepOutputs train_step(model::Gpt& net, torch::optim::AdamW& optimizer, FusedAdamW& adamw,
                       const DeviceBatch& b, const torch::Tensor* lr) {
  const auto input = b.sequence.narrow(1, 0, 64).contiguous();
  const auto target = b.sequence.narrow(1, 1, 64).contiguous();
  optimizer.zero_grad();
  torch::Tensor loss;
  {
    const Bf16Autocast autocast(true);
    const auto logits = net(input);
    loss = torch::nn::functional::cross_entropy(logits.view({-1, 64}), target.view({-1}));
  }
  loss.backward();
  const auto norm = clip_grad_norm_on_device(net->parameters(), 1.0);
  if (lr != nullptr) {
    adamw.step(*lr);
  } else {
    adamw.step();
  }
  return {loss.detach(), norm.detach()};
}

double rel_l2(const torch::Tensor& got, const torch::Tensor& want) {
  return (got.to(torch::kFloat64) - want.to(torch::kFloat64)).norm().item<double>() /
         want.to(torch::kFloat64).norm().item<double>();
}

TEST(CapturedStep, ACpuModelCannotBeCapturedAndSaysWhy) {
  model::Gpt net(small_config());
  const auto why = CapturedTrainStep::problem(net);
  EXPECT_FALSE(why.empty());
  EXPECT_TRUE(why.find("CUDA") != std::string::npos || why.find("cpu") != std::string::npos) << why;
}

TEST(CapturedStep, BadArgumentsAreClearErrors) {
  try {
    CapturedTrainStep step([](const DeviceBatch&, const torch::Tensor&) { return StepOutputs{}; },
                           torch::kCPU);
    FAIL() << "a CPU device was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("needs a CUDA device"), std::string::npos) << e.what();
  }
  model::Gpt net(small_config());
  auto optimizer = make_adamw(*net, 1e-3, 0.1);
  FusedAdamW adamw(optimizer);
  try {
    adamw.step(torch::tensor(1e-3f));  // on the CPU: not the device learning rate it needs
    FAIL() << "a host learning rate tensor was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("one float32 value on the CUDA device"), std::string::npos)
        << e.what();
  }
}

TEST(CapturedStep, TheLoopOnTheCpuIgnoresTheSwitch) {
  std::vector<std::vector<double>> losses(2);
  for (int on = 0; on < 2; ++on) {
    torch::manual_seed(3);
    model::Gpt net(small_config());
    auto optimizer = make_adamw(*net, 1e-3, 0.1);
    LoopSettings s;
    s.steps = 3;
    s.lr = 1e-3;
    s.tokens_per_step = 4 * 64;
    s.quiet = true;
    s.cuda_graph = on == 1;
    s.first_loss_reference = std::log(64.0);
    LoopHooks hooks;
    hooks.batch = [](int64_t step, bool) { return StepBatch{batch_of(step), {}, {}, {}}; };
    hooks.metrics = [&](const nlohmann::json& line) {
      losses[static_cast<size_t>(on)].push_back(line["loss"].get<double>());
    };
    run_loop(net, optimizer, torch::kCPU, 0, s, hooks);
  }
  ASSERT_EQ(losses[0].size(), 3u);
  EXPECT_EQ(losses[0], losses[1]);
}

class CapturedStepCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(CapturedStepCuda, ReplaysMatchTheEagerSteps) {
  const torch::Device cuda(torch::kCUDA, 0);
  const int64_t steps = 8;
  const auto lr_at = [](int64_t step) { return 1e-2 * static_cast<double>(step + 1) / 8.0; };

  torch::manual_seed(5);
  model::Gpt eager(small_config());
  eager->to(cuda);
  auto eager_optimizer = make_adamw(*eager, 1e-3, 0.1);
  FusedAdamW eager_adamw(eager_optimizer);
  std::vector<double> eager_losses;
  for (int64_t step = 0; step < steps; ++step) {
    for (auto& group : eager_optimizer.param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr_at(step));
    }
    const DeviceBatch b{batch_of(step).to(cuda), {}, {}};
    eager_losses.push_back(
        train_step(eager, eager_optimizer, eager_adamw, b, nullptr).loss.item<double>());
  }

  torch::manual_seed(5);
  model::Gpt net(small_config());
  net->to(cuda);
  ASSERT_TRUE(CapturedTrainStep::problem(net).empty()) << CapturedTrainStep::problem(net);
  auto optimizer = make_adamw(*net, 1e-3, 0.1);
  FusedAdamW adamw(optimizer);
  CapturedTrainStep captured(
      [&](const DeviceBatch& b, const torch::Tensor& lr) {
        return train_step(net, optimizer, adamw, b, &lr);
      },
      cuda);
  std::vector<double> losses;
  for (int64_t step = 0; step < steps; ++step) {
    const auto batch = batch_of(step).pin_memory();
    ASSERT_TRUE(captured.accepts(batch, {}, {}));
    losses.push_back(captured.run(batch, {}, {}, lr_at(step)).loss.item<double>());
    adamw.count_host_step();
  }
  EXPECT_EQ(captured.runs(), steps);
  EXPECT_EQ(captured.replays(), steps - 1);
  ASSERT_GT(eager_losses.front() - eager_losses.back(), 0.02 * eager_losses.front())
      << "the reference run does not learn: the comparison would not catch a skipped update";
  for (int64_t step = 0; step < steps; ++step) {
    const auto i = static_cast<size_t>(step);
    EXPECT_NEAR(losses[i], eager_losses[i], 1e-3 * std::abs(eager_losses[i])) << "step " << step;
  }
  const auto got = net->parameters(), want = eager->parameters();
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_LT(rel_l2(got[i].detach(), want[i].detach()), 1e-3) << "parameter " << i;
  }
  // The host's step counts follow the replays (checkpoints save them).
  for (const auto& p : net->parameters()) {
    const auto& state =
        static_cast<torch::optim::AdamWParamState&>(*optimizer.state().at(optimizer_state_key(p)));
    EXPECT_EQ(state.step(), steps);
  }
  // Another batch shape is not the captured step's.
  EXPECT_FALSE(captured.accepts(torch::zeros({2, 65}, torch::kInt64), {}, {}));
}

TEST_F(CapturedStepCuda, AHostReadInTheStepIsAClearErrorAndTheDeviceStaysUsable) {
  const auto x = torch::randn({16}, torch::Device(torch::kCUDA, 0));
  CapturedTrainStep captured(
      [&](const DeviceBatch&, const torch::Tensor&) {
        const auto loss = x.sum();
        if (loss.item<double>() > 1e30) return StepOutputs{};  // a host read: not capturable
        return StepOutputs{loss, loss};
      },
      x.device());
  const auto batch = torch::zeros({2, 9}, torch::kInt64).pin_memory();
  captured.run(batch, {}, {}, 1e-3);  // the eager first run reads the host freely
  try {
    captured.run(batch, {}, {}, 1e-3);
    FAIL() << "a host read during capture was not reported";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA graph capture"), std::string::npos) << e.what();
  }
  EXPECT_NEAR((x * 2).sum().item<double>(), 2 * x.sum().item<double>(), 1e-4);
}

TEST_F(CapturedStepCuda, TheLoopTrainsThroughTheGraphAsEagerly) {
  const torch::Device cuda(torch::kCUDA, 0);
  std::vector<std::vector<double>> losses(2);
  for (int on = 0; on < 2; ++on) {
    torch::manual_seed(7);
    model::Gpt net(small_config());
    net->to(cuda);
    auto optimizer = make_adamw(*net, 2e-3, 0.1);
    LoopSettings s;
    s.steps = 6;
    s.lr = 2e-3;
    s.warmup = 2;
    s.log_every = 2;
    s.tokens_per_step = 4 * 64;
    s.quiet = true;
    s.bf16 = true;
    s.cuda_graph = on == 1;
    s.first_loss_reference = std::log(64.0);
    LoopHooks hooks;
    hooks.batch = [](int64_t step, bool pinned) {
      auto b = batch_of(step);
      return StepBatch{pinned ? b.pin_memory() : b, {}, {}, {}};
    };
    hooks.metrics = [&](const nlohmann::json& line) {
      losses[static_cast<size_t>(on)].push_back(line["loss"].get<double>());
    };
    run_loop(net, optimizer, cuda, 0, s, hooks);
  }
  ASSERT_EQ(losses[1].size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_NEAR(losses[1][i], losses[0][i], 1e-3 * std::abs(losses[0][i])) << "step " << i + 1;
  }
}

}  // namespace
}  // namespace reach::train
