#include "model/gpt.hpp"

#include <gtest/gtest.h>

#include <cmath>

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

TEST(Gpt, NonIntegerTokensAreAClearError) {
  auto c = preset("micro");
  c.reach = 24;
  Gpt net(c);
  // torch::randint(..., torch::kCUDA) makes float ids: a common slip.
  const auto tokens = torch::randint(0, 256, {2, 16}).to(torch::kFloat32);
  try {
    net(tokens);
    FAIL() << "float token ids were accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("integer token ids"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(net(tokens.to(torch::kLong)));
  EXPECT_NO_THROW(net(tokens.to(torch::kInt)));
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

// The learned layer takes a host value of alpha for one forward (the model reads every
// layer's alpha in one go): the right value changes nothing, a given value is used once.
TEST(Gpt, LearnedLayerUsesAHostAlphaValueOnce) {
  auto c = preset("micro");
  c.attention = "fibonacci";
  c.schedule = "learned";
  c.reach = 64;
  torch::manual_seed(8);
  CausalSelfAttention attn(c, 1);
  const auto h = torch::randn({2, 48, c.d_model});
  const auto plain = attn(h);
  attn->use_alpha_value_once(attn->alpha());
  EXPECT_TRUE(torch::equal(attn(h), plain));
  attn->use_alpha_value_once(attn->alpha() * 1.5);
  EXPECT_FALSE(torch::allclose(attn(h), plain));
  EXPECT_TRUE(torch::equal(attn(h), plain));
  // Through the model (which hands every layer its value): theta still gets its gradient.
  Gpt net(c);
  net(torch::randint(0, 256, {2, 40}, torch::kInt64)).logsumexp(-1).mean().backward();
  for (const auto& block : net->blocks) {
    const auto& grad = block->attn->learned_theta().grad();
    ASSERT_TRUE(grad.defined());
    EXPECT_TRUE(std::isfinite(grad.item<double>()));
    EXPECT_NE(grad.item<double>(), 0.0);
  }
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

// Every normaliser over every key set, with every position scheme: forward and backward
// run, and the log-n scaling parameters get gradients.
TEST(Gpt, EveryNormalizerAndPositionSchemeTrains) {
  for (const std::string normalizer : {"softmax", "entmax", "asentmax", "ssmax"}) {
    for (const std::string attention : {"dense", "window", "fibonacci"}) {
      for (const std::string positions : {"rope", "alibi", "nope", "nape"}) {
        auto c = preset("micro");
        c.attention = attention;
        c.normalizer = normalizer;
        c.positions = positions;
        c.reach = 24;
        Gpt net(c);
        auto logits = net(torch::randint(0, 256, {2, 30}, torch::kInt64));
        ASSERT_TRUE(torch::isfinite(logits).all().item<bool>());
        logits.logsumexp(-1).mean().backward();
        const std::string what = normalizer + "/" + attention + "/" + positions;
        for (const auto& p : net->named_parameters()) {
          ASSERT_TRUE(p.value().grad().defined()) << what << " " << p.key();
        }
        if (normalizer == "asentmax" || normalizer == "ssmax") {
          EXPECT_GT(
              net->blocks[0]->attn->named_parameters()["beta"].grad().abs().sum().item<double>(), 0)
              << what;
        }
      }
    }
  }
}

// The same NAPE softmax attention by two routes: the dense matmul path (attention =
// dense) and the entmax operator's softmax over a window covering every key (attention =
// window, W >= T). Same seed, same parameters, so the logits agree to float32 rounding.
TEST(Gpt, NapeDenseMatmulEqualsOperatorPath) {
  auto c = preset("micro");
  c.positions = "nape";
  c.attention = "dense";
  torch::manual_seed(5);
  Gpt dense(c);
  c.attention = "window";
  c.window = 64;
  torch::manual_seed(5);
  Gpt windowed(c);
  auto x = torch::randint(0, 256, {2, 37}, torch::kInt64);
  EXPECT_LT((dense(x) - windowed(x)).abs().max().item<double>(), 1e-4);
}

// Evaluation (no autograd) runs dense attention in query blocks; same result as one block.
TEST(Gpt, BlockedDenseEvaluationMatchesTraining) {
  auto c = preset("micro");
  c.attention = "dense";
  c.positions = "alibi";
  Gpt net(c);
  auto x = torch::randint(0, 256, {1, 1500}, torch::kInt64);
  auto full = net(x).detach();
  torch::NoGradGuard no_grad;
  EXPECT_LT((net(x) - full).abs().max().item<double>(), 1e-4);
}

TEST(Gpt, NormalizerConfigErrorsNameTheKey) {
  auto expect_error = [](ModelConfig c, const std::string& fragment) {
    try {
      validate(c);
      FAIL() << "expected an error with '" << fragment << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  auto c = preset("micro");
  c.normalizer = "sparsemax";
  expect_error(c, "model.normalizer");
  c = preset("micro");
  c.entmax_alpha = 1.0;
  expect_error(c, "model.entmax_alpha");
  c = preset("micro");
  c.schedule = "learned";
  c.normalizer = "entmax";
  expect_error(c, "integer offsets");
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
