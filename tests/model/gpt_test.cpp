#include "model/gpt.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "model/attention/factory.hpp"

namespace reach::model {
namespace {

TEST(Gpt, EveryAttentionKindRunsForwardAndBackward) {
  for (const auto attention : {AttentionFamily::dense, AttentionFamily::window,
                               AttentionFamily::fibonacci, AttentionFamily::power_of_two}) {
    for (const auto schedule : {AlphaSchedule::fixed, AlphaSchedule::stagger,
                                AlphaSchedule::coprime, AlphaSchedule::learned}) {
      if (!is_dilated(attention) && schedule != AlphaSchedule::fixed) continue;
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
        ASSERT_TRUE(p.value().grad().defined())
            << to_string(attention) << "/" << to_string(schedule) << " " << p.key();
      }
    }
  }
}

// The main paper's model (its authors' code: GQA 8 over 2, SwiGLU 1366, RMSNorm, no biases,
// tied 32,768-token embedding): 60,850,688 parameters, the paper's "60.9M".
TEST(Gpt, PaperExactPresetHasThePapersParameterCount) {
  auto c = preset("paper-exact");
  c.reach = 1024;
  EXPECT_EQ(mlp_hidden_of(c), 1366);
  EXPECT_EQ(kv_heads_of(c), 2);
  EXPECT_EQ(kernel_window(c), 13);  // distances 0..12
  Gpt net(c);
  EXPECT_EQ(parameter_count(*net), 60850688);
  // Its layers read the paper's offsets: at the stagger's last layer (alpha 1.5), the rungs
  // round(1.5 f) with 12 < d <= 1023, ties to even (19.5 -> 20, 82.5 -> 82, 133.5 -> 134).
  EXPECT_EQ(net->blocks[15]->attn->integer_offsets(),
            (std::vector<int64_t>{20, 32, 51, 82, 134, 216, 350, 566, 915}));
}

// Grouped-query attention through the dilated op (K/V read per group) equals the same
// weights with K/V expanded per query head (the dense path), forward and backward; and the
// paper's model options train.
TEST(Gpt, GroupedQueryAttentionModelsTrain) {
  for (const auto attention : {AttentionFamily::dense, AttentionFamily::fibonacci}) {
    auto c = preset("micro");
    c.heads = 4;
    c.kv_heads = 2;
    c.mlp = Mlp::swiglu;
    c.norm = Norm::rmsnorm;
    c.bias = false;
    c.attention = attention;
    c.reach = 24;
    Gpt net(c);
    auto logits = net(torch::randint(0, 256, {2, 30}, torch::kInt64));
    ASSERT_TRUE(torch::isfinite(logits).all().item<bool>());
    logits.logsumexp(-1).mean().backward();
    for (const auto& p : net->named_parameters()) {
      ASSERT_TRUE(p.value().grad().defined()) << p.key();
      EXPECT_EQ(p.key().find(".bias"), std::string::npos) << p.key();
    }
    // q: 32 x 32, k and v: 2 heads x 8 each: qkv has 32 + 2 * 16 = 64 outputs.
    EXPECT_EQ(net->blocks[0]->attn->named_parameters()["qkv.weight"].size(0), 64);
  }
}

TEST(Gpt, BadModelOptionsAreClearErrors) {
  auto expect_error = [](ModelConfig c, const std::string& text) {
    try {
      validate(c);
      FAIL() << "accepted: " << text;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  auto c = preset("micro");
  c.kv_heads = 3;
  expect_error(c, "model.kv_heads (3) must divide model.heads (2)");
  c = preset("micro");
  c.kv_heads = 1;
  c.normalizer = Normalizer::entmax;
  expect_error(c, "grouped-query attention) works with softmax only");
  c = preset("micro");
  c.convention = pattern::OffsetConvention::paper;
  c.schedule = AlphaSchedule::learned;
  expect_error(c, "the paper's learned gather is not built");
  EXPECT_THROW(parse_norm("batchnorm"), std::invalid_argument);
  EXPECT_THROW(parse_mlp("relu"), std::invalid_argument);
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
  c.schedule = AlphaSchedule::stagger;
  c.alpha_min = 1.0;
  c.alpha_max = 2.5;
  c.reach = 64;
  Gpt net(c);
  EXPECT_DOUBLE_EQ(net->blocks[0]->attn->alpha(), 1.0);
  EXPECT_DOUBLE_EQ(net->blocks[3]->attn->alpha(), 2.5);
  c.schedule = AlphaSchedule::learned;
  Gpt learned(c);
  EXPECT_NEAR(learned->blocks[1]->attn->alpha(), 1.5, 1e-12);
}

// The learned layer takes a host value of alpha for one forward (the model reads every
// layer's alpha in one go): the right value changes nothing, a given value is used once.
TEST(Gpt, LearnedLayerUsesAHostAlphaValueOnce) {
  auto c = preset("micro");
  c.attention = AttentionFamily::fibonacci;
  c.schedule = AlphaSchedule::learned;
  c.reach = 64;
  torch::manual_seed(8);
  const auto attn = attention::make_attention(c, 1);
  const auto h = torch::randn({2, 48, c.d_model});
  const auto plain = attn->forward(h);
  attn->use_host_value_once(attn->alpha());
  EXPECT_TRUE(torch::equal(attn->forward(h), plain));
  attn->use_host_value_once(attn->alpha() * 1.5);
  EXPECT_FALSE(torch::allclose(attn->forward(h), plain));
  EXPECT_TRUE(torch::equal(attn->forward(h), plain));
  // Through the model (which hands every layer its value): theta still gets its gradient.
  Gpt net(c);
  net(torch::randint(0, 256, {2, 40}, torch::kInt64)).logsumexp(-1).mean().backward();
  for (const auto& block : net->blocks) {
    const auto grad = block->attn->named_parameters()["theta"].grad();
    ASSERT_TRUE(grad.defined());
    EXPECT_TRUE(std::isfinite(grad.item<double>()));
    EXPECT_NE(grad.item<double>(), 0.0);
  }
}

TEST(Gpt, AlibiAndNopeWithDense) {
  for (const auto positions : {Positions::alibi, Positions::nope}) {
    auto c = preset("micro");
    c.attention = AttentionFamily::dense;
    c.positions = positions;
    Gpt net(c);
    EXPECT_EQ(net(torch::randint(0, 256, {1, 9}, torch::kInt64)).size(1), 9);
  }
}

// Every normaliser over every key set, with every position scheme: forward and backward
// run, and the log-n scaling parameters get gradients.
TEST(Gpt, EveryNormalizerAndPositionSchemeTrains) {
  for (const auto normalizer :
       {Normalizer::softmax, Normalizer::entmax, Normalizer::asentmax, Normalizer::ssmax}) {
    for (const auto attention :
         {AttentionFamily::dense, AttentionFamily::window, AttentionFamily::fibonacci}) {
      for (const auto positions :
           {Positions::rope, Positions::alibi, Positions::nope, Positions::nape}) {
        auto c = preset("micro");
        c.attention = attention;
        c.normalizer = normalizer;
        c.positions = positions;
        c.reach = 24;
        Gpt net(c);
        auto logits = net(torch::randint(0, 256, {2, 30}, torch::kInt64));
        ASSERT_TRUE(torch::isfinite(logits).all().item<bool>());
        logits.logsumexp(-1).mean().backward();
        const std::string what =
            to_string(normalizer) + "/" + to_string(attention) + "/" + to_string(positions);
        for (const auto& p : net->named_parameters()) {
          ASSERT_TRUE(p.value().grad().defined()) << what << " " << p.key();
        }
        if (normalizer == Normalizer::asentmax || normalizer == Normalizer::ssmax) {
          EXPECT_GT(
              net->blocks[0]->attn->named_parameters()["beta"].grad().abs().sum().item<double>(), 0)
              << what;
        }
      }
    }
  }
}

// Every normaliser with NAPE (the associative-recall models) on CUDA gives the CPU's logits and
// gradients: a parameter-free part of the scaling (SSMax's delta and gamma) left on the CPU
// made the SSMax model fail on the GPU ("found at least two devices"). float32 both sides;
// 1e-4 covers the different summation orders of the CUDA and CPU kernels at 30 tokens.
TEST(GptCuda, EveryNormalizerWithNapeMatchesTheCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (const auto normalizer :
       {Normalizer::softmax, Normalizer::entmax, Normalizer::asentmax, Normalizer::ssmax}) {
    auto c = preset("micro");
    c.attention = AttentionFamily::dense;
    c.normalizer = normalizer;
    c.positions = Positions::nape;
    torch::manual_seed(11);
    Gpt cpu(c);
    torch::manual_seed(11);
    Gpt gpu(c);
    gpu->to(torch::kCUDA);
    const auto x = torch::randint(0, 256, {2, 30}, torch::kInt64);
    const auto expected = cpu(x);
    const auto got = gpu(x.to(torch::kCUDA));
    const std::string what = to_string(normalizer);
    EXPECT_TRUE(torch::allclose(got.cpu(), expected, 1e-4, 1e-4)) << what;
    expected.logsumexp(-1).mean().backward();
    got.logsumexp(-1).mean().backward();
    const auto gpu_parameters = gpu->named_parameters();
    for (const auto& p : cpu->named_parameters()) {
      const auto g = gpu_parameters[p.key()].grad();
      ASSERT_TRUE(g.defined()) << what << " " << p.key();
      EXPECT_TRUE(torch::allclose(g.cpu(), p.value().grad(), 1e-3, 1e-4)) << what << " " << p.key();
    }
  }
}

// The same NAPE softmax attention by two routes: the dense matmul path (attention =
// dense) and the entmax operator's softmax over a window covering every key (attention =
// window, W >= T). Same seed, same parameters, so the logits agree to float32 rounding.
TEST(Gpt, NapeDenseMatmulEqualsOperatorPath) {
  auto c = preset("micro");
  c.positions = Positions::nape;
  c.attention = AttentionFamily::dense;
  torch::manual_seed(5);
  Gpt dense(c);
  c.attention = AttentionFamily::window;
  c.window = 64;
  torch::manual_seed(5);
  Gpt windowed(c);
  auto x = torch::randint(0, 256, {2, 37}, torch::kInt64);
  EXPECT_LT((dense(x) - windowed(x)).abs().max().item<double>(), 1e-4);
}

// Evaluation (no autograd) runs dense attention in query blocks; same result as one block.
TEST(Gpt, BlockedDenseEvaluationMatchesTraining) {
  auto c = preset("micro");
  c.attention = AttentionFamily::dense;
  c.positions = Positions::alibi;
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
  // A name that is no normaliser fails at parsing, the one place names are read.
  try {
    parse_normalizer("sparsemax");
    FAIL() << "sparsemax parsed";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("model.normalizer"), std::string::npos) << e.what();
  }
  auto c = preset("micro");
  c = preset("micro");
  c.entmax_alpha = 1.0;
  expect_error(c, "model.entmax_alpha");
  c = preset("micro");
  c.schedule = AlphaSchedule::learned;
  c.normalizer = Normalizer::entmax;
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
