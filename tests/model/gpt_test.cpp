#include "model/gpt.hpp"

#include <gtest/gtest.h>

namespace reach::model {
namespace {

TEST(Gpt, EveryAttentionKindRunsForwardAndBackward) {
  for (const std::string attention : {"dense", "window", "fibonacci", "power_of_two"}) {
    for (const std::string schedule : {"fixed", "stagger", "coprime", "learned"}) {
      if (attention != "fibonacci" && attention != "power_of_two" && schedule != "fixed") continue;
      auto c = preset("micro");
      c.attention = attention;
      c.schedule = schedule;
      c.reach = 24;
      Gpt net(c);
      auto x = torch::randint(0, 256, {2, 40}, torch::kInt64);
      auto logits = net(x);
      EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 40, 256}));
      logits.logsumexp(-1).mean().backward();
      for (const auto& p : net->named_parameters()) {
        ASSERT_TRUE(p.value().grad().defined()) << attention << "/" << schedule << " " << p.key();
      }
    }
  }
}

TEST(Gpt, LayersGetTheirScheduleAlphas) {
  auto c = preset("micro");
  c.layers = 4;
  c.schedule = "stagger";
  c.alpha_min = 1.0;
  c.alpha_max = 2.5;
  c.reach = 64;
  Gpt net(c);
  EXPECT_DOUBLE_EQ(net->blocks[0]->attn->alpha(), 1.0);
  EXPECT_DOUBLE_EQ(net->blocks[3]->attn->alpha(), 2.5);
  c.schedule = "learned";
  Gpt learned(c);
  EXPECT_NEAR(learned->blocks[1]->attn->alpha(), 1.5, 1e-12);
}

TEST(Gpt, AlibiAndNopeWithDense) {
  for (const std::string positions : {"alibi", "nope"}) {
    auto c = preset("micro");
    c.attention = "dense";
    c.positions = positions;
    Gpt net(c);
    EXPECT_EQ(net(torch::randint(0, 256, {1, 9}, torch::kInt64)).size(1), 9);
  }
}

}  // namespace
}  // namespace reach::model

namespace reach::model {
namespace {

TEST(Gpt, PaperPresetHasAboutSixtyMillionParameters) {
  auto c = preset("paper");
  c.reach = 1024;
  Gpt net(c);
  EXPECT_EQ(c.layers, 16);
  EXPECT_EQ(c.d_model, 512);
  EXPECT_EQ(c.heads, 8);
  EXPECT_EQ(parameter_count(*net), 58795008);  // 16384 x 512 + 16 x 3,150,336 + 1,024
}

}  // namespace
}  // namespace reach::model
