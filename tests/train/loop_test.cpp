// The shared training loop: the divergence rule (non-finite loss, loss spikes), the smoothing
// of the printed step time, and a poisoned weight stopping training with the last good
// checkpoint named and no checkpoint written after it.
#include "train/loop.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "model/model_config.hpp"
#include "train/optimizer.hpp"

namespace reach::train {
namespace {

TEST(SpikeCheck, FlagsNonFiniteLossesAndSpikesOnly) {
  SpikeCheck normal(std::log(256.0));
  for (double loss : {5.6, 5.0, 4.1, 3.5, 3.0, 2.6, 2.9, 2.4}) {
    EXPECT_FALSE(normal.check(loss).has_value()) << loss;
  }
  // 4x the median of the previous steps (~3.5) is a spike; just under it is not.
  EXPECT_FALSE(normal.check(13.0).has_value());
  const auto spike = normal.check(1e12);
  ASSERT_TRUE(spike.has_value());
  EXPECT_NE(spike->find("loss spike"), std::string::npos) << *spike;

  // A nearly solved task swings by more than 4x at tiny losses: not a spike until the loss is
  // worse than a uniform guess (ln 256 = 5.55).
  SpikeCheck solved(std::log(256.0));
  for (int i = 0; i < 32; ++i) EXPECT_FALSE(solved.check(0.05).has_value());
  EXPECT_FALSE(solved.check(0.3).has_value());
  EXPECT_FALSE(solved.check(5.5).has_value());
  EXPECT_TRUE(solved.check(5.6).has_value());

  // The first step is compared with ln(vocab): a loss of 1e12 at step 1 is flagged there.
  SpikeCheck first(std::log(256.0));
  EXPECT_TRUE(first.check(1e12).has_value());
  SpikeCheck second(std::log(256.0));
  EXPECT_FALSE(second.check(5.6).has_value());
  EXPECT_TRUE(second.check(1e12).has_value());
  SpikeCheck nan(std::log(256.0));
  EXPECT_NE(nan.check(std::nan("")).value().find("nan"), std::string::npos);
  EXPECT_TRUE(SpikeCheck(0).check(INFINITY).has_value());
}

TEST(StepTimeSmoother, ASlowFirstStepFadesInsteadOfJumping) {
  StepTimeSmoother s;
  EXPECT_DOUBLE_EQ(s.add(1.0, 1), 1.0);  // bias-corrected: the first value is itself
  double previous = 1.0;
  for (int i = 0; i < 50; ++i) {
    const double now = s.add(0.1, 1);
    EXPECT_LT(now, previous);  // falls monotonically towards the steady 0.1 s/step
    EXPECT_GT(now, 0.1);
    previous = now;
  }
  EXPECT_NEAR(previous, 0.1, 0.01);
  // A window of several steps counts per step.
  StepTimeSmoother w;
  EXPECT_DOUBLE_EQ(w.add(2.0, 4), 0.5);
}

TEST(Loop, APoisonedWeightStopsTrainingWithTheLastGoodCheckpointKept) {
  auto config = model::preset("micro");
  config.vocab_size = 16;
  config.reach = 16;
  torch::manual_seed(1);
  model::Gpt net(config);
  auto optimizer = make_adamw(*net, 1e-3, 0.1);
  LoopSettings s;
  s.steps = 10;
  s.lr = 1e-3;
  s.log_every = 1;
  s.checkpoint_every = 2;
  s.tokens_per_step = 2 * 16;
  s.quiet = true;
  s.first_loss_reference = std::log(16.0);
  std::vector<int64_t> checkpoints;
  LoopHooks hooks;
  hooks.batch = [&](int64_t step, bool) {
    if (step == 4) {  // the fifth step: a weight goes NaN (as from a bad update)
      torch::NoGradGuard no_grad;
      net->parameters().front().view(-1)[0] = NAN;
    }
    return StepBatch{torch::randint(0, 16, {2, 17}, torch::kInt64), {}, {}, {}};
  };
  hooks.checkpoint = [&](int64_t steps_done) {
    checkpoints.push_back(steps_done);
    return "ckpt-" + std::to_string(steps_done);
  };
  try {
    run_loop(net, optimizer, torch::kCPU, 0, s, hooks);
    FAIL() << "a NaN weight did not stop training";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("diverged at step 5"), std::string::npos) << what;
    EXPECT_NE(what.find("the last good checkpoint is ckpt-4"), std::string::npos) << what;
  }
  EXPECT_EQ(checkpoints, (std::vector<int64_t>{2, 4}));
  EXPECT_FALSE(weights_are_finite(*net));
}

}  // namespace
}  // namespace reach::train
