// The attention interface: which family each config gets, the parameter names checkpoints
// rely on, decoding over a KV cache against the full forward, budgets, and bad input.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/cpu/reference_entmax_attention.hpp"
#include "model/attention/dense.hpp"
#include "model/attention/dilated.hpp"
#include "model/attention/entmax.hpp"
#include "model/attention/factory.hpp"
#include "model/attention/learned_dilated.hpp"
#include "model/attention/positions.hpp"
#include "model/attention/window.hpp"
#include "model/gpt.hpp"

namespace reach::model {
namespace {

using attention::AttentionLayer;

ModelConfig micro(AttentionFamily attention, AlphaSchedule schedule = AlphaSchedule::stagger,
                  Normalizer normalizer = Normalizer::softmax,
                  Positions positions = Positions::rope) {
  auto c = preset("micro");
  c.attention = attention;
  c.schedule = schedule;
  c.normalizer = normalizer;
  c.positions = positions;
  c.reach = 24;
  return c;
}

// ASEntmax with per-query beta, gamma and a learned alpha per head (trained a little so the
// projections are not zero and alpha is not 1.5).
ModelConfig per_query_learned(ModelConfig c) {
  c.entmax_scale = EntmaxScale::per_query;
  c.entmax_alpha_mode = EntmaxAlpha::learned;
  return c;
}

// Moves every parameter of net by a seeded random step (so zero-initialised projections and
// the alpha logits take generic values).
void perturb(Gpt& net, double size) {
  torch::NoGradGuard no_grad;
  for (auto& p : net->parameters()) p.add_(torch::randn_like(p) * size);
}

template <class Family>
bool is(const std::shared_ptr<AttentionLayer>& layer) {
  return std::dynamic_pointer_cast<Family>(layer) != nullptr;
}

TEST(Attention, FactoryPicksTheFamily) {
  using attention::make_attention;
  EXPECT_TRUE(is<attention::DenseAttention>(make_attention(micro(AttentionFamily::dense), 0)));
  EXPECT_TRUE(is<attention::DenseAttention>(make_attention(
      micro(AttentionFamily::dense, AlphaSchedule::fixed, Normalizer::softmax, Positions::nape),
      0)));
  EXPECT_TRUE(is<attention::WindowAttention>(make_attention(micro(AttentionFamily::window), 0)));
  EXPECT_TRUE(
      is<attention::DilatedAttention>(make_attention(micro(AttentionFamily::power_of_two), 1)));
  EXPECT_TRUE(is<attention::LearnedDilatedAttention>(
      make_attention(micro(AttentionFamily::fibonacci, AlphaSchedule::learned), 0)));
  // A bias over a sparse key set, or any normaliser but softmax: the entmax operator.
  EXPECT_TRUE(is<attention::EntmaxAttention>(make_attention(
      micro(AttentionFamily::window, AlphaSchedule::fixed, Normalizer::softmax, Positions::alibi),
      0)));
  EXPECT_TRUE(is<attention::EntmaxAttention>(
      make_attention(micro(AttentionFamily::dense, AlphaSchedule::fixed, Normalizer::ssmax), 0)));
}

// Checkpoints (safetensors) store parameters by these names, in this order (the order the
// initialisation draws its random numbers in).
TEST(Attention, ParameterNamesAreTheCheckpointKeys) {
  auto names = [](const ModelConfig& c) {
    Gpt net(c);
    std::vector<std::string> out;
    for (const auto& p : net->named_parameters()) {
      if (p.key().starts_with("blocks.0.")) out.push_back(p.key().substr(9));
    }
    return out;
  };
  const std::vector<std::string> rest = {"ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias",
                                         "fc.weight",  "fc.bias",  "out.weight", "out.bias"};
  // named_parameters lists a module's own parameters before its children's.
  auto with = [&](const std::vector<std::string>& attn) {
    std::vector<std::string> out = {rest[0], rest[1]};
    for (const auto& a : attn) out.push_back("attn." + a);
    out.insert(out.end(), rest.begin() + 2, rest.end());
    return out;
  };
  EXPECT_EQ(names(micro(AttentionFamily::dense)), with({"qkv.weight", "proj.weight"}));
  EXPECT_EQ(names(micro(AttentionFamily::fibonacci)), with({"qkv.weight", "proj.weight"}));
  EXPECT_EQ(names(micro(AttentionFamily::fibonacci, AlphaSchedule::learned)),
            with({"theta", "qkv.weight", "proj.weight"}));
  EXPECT_EQ(names(micro(AttentionFamily::window, AlphaSchedule::fixed, Normalizer::asentmax)),
            with({"delta", "beta", "gamma", "qkv.weight", "proj.weight"}));
  EXPECT_EQ(names(micro(AttentionFamily::fibonacci, AlphaSchedule::fixed, Normalizer::ssmax,
                        Positions::nape)),
            with({"beta", "qkv.weight", "proj.weight"}));
  EXPECT_EQ(names(per_query_learned(
                micro(AttentionFamily::fibonacci, AlphaSchedule::fixed, Normalizer::asentmax))),
            with({"alpha_logit", "delta", "qkv.weight", "proj.weight", "scale_beta.weight",
                  "scale_beta.bias", "scale_gamma.weight", "scale_gamma.bias"}));
  Gpt net(micro(AttentionFamily::dense));
  EXPECT_TRUE(net->named_parameters().contains("blocks.1.attn.qkv.weight"));
  EXPECT_TRUE(net->named_parameters().contains("wte.weight"));
  EXPECT_TRUE(net->named_parameters().contains("ln_f.weight"));
}

// Prefill then one token at a time over the KV cache gives the full forward's logits, for
// every family (through each family's attend_cached, the generic one included).
TEST(Attention, DecodeOverTheCacheMatchesTheFullForward) {
  const std::vector<ModelConfig> configs = {
      micro(AttentionFamily::dense),
      micro(AttentionFamily::dense, AlphaSchedule::fixed, Normalizer::softmax, Positions::alibi),
      micro(AttentionFamily::window),
      micro(AttentionFamily::fibonacci, AlphaSchedule::stagger),
      micro(AttentionFamily::power_of_two, AlphaSchedule::learned),
      micro(AttentionFamily::fibonacci, AlphaSchedule::coprime, Normalizer::entmax,
            Positions::nape),
      micro(AttentionFamily::dense, AlphaSchedule::fixed, Normalizer::asentmax),
      micro(AttentionFamily::window, AlphaSchedule::fixed, Normalizer::ssmax, Positions::alibi),
      per_query_learned(micro(AttentionFamily::fibonacci, AlphaSchedule::fixed,
                              Normalizer::asentmax, Positions::nape)),
      per_query_learned(micro(AttentionFamily::dense, AlphaSchedule::fixed, Normalizer::asentmax)),
  };
  torch::manual_seed(3);
  const auto tokens = torch::randint(0, 256, {2, 40}, torch::kInt64);
  constexpr int64_t kPrefill = 23;
  for (const auto& c : configs) {
    const std::string what = to_string(c.attention) + "/" + to_string(c.schedule) + "/" +
                             to_string(c.normalizer) + "/" + to_string(c.positions);
    Gpt net(c);
    if (c.entmax_scale == EntmaxScale::per_query) perturb(net, 0.05);
    torch::NoGradGuard no_grad;
    const auto full = net(tokens);
    attention::KvCache cache(c.layers);
    attention::ForwardContext context;
    context.cache = &cache;
    auto logits = net->forward_with(context, tokens.narrow(1, 0, kPrefill));
    // Float32 sums over different row counts: agreement to rounding, far below the logits' 1.
    EXPECT_LT((logits - full.narrow(1, 0, kPrefill)).abs().max().item<double>(), 1e-4) << what;
    for (int64_t p = kPrefill; p < tokens.size(1); ++p) {
      context.position = p;
      logits = net->forward_with(context, tokens.narrow(1, p, 1));
      ASSERT_EQ(cache.length(), p + 1) << what;
      EXPECT_LT((logits - full.narrow(1, p, 1)).abs().max().item<double>(), 1e-4)
          << what << " at " << p;
    }
  }
}

TEST(Attention, RungsBudgetKeepsTheNearestOffsets) {
  torch::manual_seed(5);
  const auto c = micro(AttentionFamily::fibonacci);
  Gpt net(c);
  ASSERT_GT(net->blocks[1]->attn->integer_offsets().size(), 1u);
  const auto tokens = torch::randint(0, 256, {2, 30}, torch::kInt64);
  torch::NoGradGuard no_grad;
  const auto full = net(tokens);
  attention::ForwardContext all;
  all.budget.rungs = 1000;
  EXPECT_TRUE(torch::equal(net->forward_with(all, tokens), full));
  attention::ForwardContext one;
  one.budget.rungs = 1;
  EXPECT_FALSE(torch::allclose(net->forward_with(one, tokens), full));
  // No rungs: the window layer with the same weights.
  attention::ForwardContext none;
  none.budget.rungs = 0;
  auto w = c;
  w.attention = AttentionFamily::window;
  torch::manual_seed(5);
  Gpt window(w);
  EXPECT_TRUE(torch::allclose(net->forward_with(none, tokens), window(tokens)));
  // The entmax operator honours it too.
  auto e = c;
  e.normalizer = Normalizer::entmax;
  Gpt entmax(e);
  EXPECT_TRUE(torch::allclose(entmax->forward_with(all, tokens), entmax(tokens)));
  EXPECT_FALSE(torch::allclose(entmax->forward_with(one, tokens), entmax(tokens)));
}

TEST(Attention, BadBudgetsAndContextsAreClearErrors) {
  auto expect_error = [](auto&& call, const std::string& fragment) {
    try {
      call();
      FAIL() << "expected an error with '" << fragment << "'";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  const auto tokens = torch::randint(0, 256, {1, 12}, torch::kInt64);
  Gpt learned(micro(AttentionFamily::fibonacci, AlphaSchedule::learned));
  attention::ForwardContext rungs;
  rungs.budget.rungs = 2;
  expect_error([&] { learned->forward_with(rungs, tokens); }, "static schedule");
  Gpt net(micro(AttentionFamily::fibonacci));
  attention::ForwardContext negative;
  negative.budget.rungs = -1;
  expect_error([&] { net->forward_with(negative, tokens); }, "rungs must be >= 0");
  attention::KvCache cache(2);
  attention::ForwardContext late;
  late.cache = &cache;
  late.position = 5;
  expect_error([&] { net->forward_with(late, tokens); }, "cache holds 0 tokens");
  attention::KvCache short_cache(1);
  attention::ForwardContext wrong;
  wrong.cache = &short_cache;
  expect_error([&] { net->forward_with(wrong, tokens); }, "KV cache has 1 layers");
  attention::ForwardContext context;
  expect_error([&] { context.read("chunk.landmarks"); }, "'chunk.landmarks'");
  context.publish("chunk.landmarks", torch::ones({2}));
  EXPECT_TRUE(context.has("chunk.landmarks"));
  EXPECT_TRUE(torch::equal(context.read("chunk.landmarks"), torch::ones({2})));
}

// The layer's RoPE at a later position is the same table sliced: decode's offsets are exact.
TEST(Attention, RopeTablesAtAnOffsetAreTheSlice) {
  attention::RopeTables grown(16, 1e4), fresh(16, 1e4);
  const auto options = torch::TensorOptions().dtype(torch::kFloat32);
  grown.get(0, 100, options);
  const auto [cos, sin] = grown.get(10, 20, options);
  const auto [cos30, sin30] = fresh.get(0, 30, options);
  EXPECT_TRUE(torch::equal(cos, cos30.narrow(0, 10, 20)));
  EXPECT_TRUE(torch::equal(sin, sin30.narrow(0, 10, 20)));
}

TEST(Attention, ConfigNamesParseOnceAndPrintBack) {
  for (const auto& name : attention_family_names()) {
    EXPECT_EQ(to_string(parse_attention_family(name)), name);
  }
  for (const auto& name : positions_names()) EXPECT_EQ(to_string(parse_positions(name)), name);
  for (const auto& name : normalizer_names()) EXPECT_EQ(to_string(parse_normalizer(name)), name);
  for (const auto& name : schedule_names()) EXPECT_EQ(to_string(parse_schedule(name)), name);
  for (const auto& name : entmax_scale_names()) {
    EXPECT_EQ(to_string(parse_entmax_scale(name)), name);
  }
  for (const auto& name : entmax_alpha_names()) {
    EXPECT_EQ(to_string(parse_entmax_alpha(name)), name);
  }
  // pattern/'s aliases.
  EXPECT_EQ(parse_attention_family("fib"), AttentionFamily::fibonacci);
  EXPECT_EQ(parse_attention_family("pow2"), AttentionFamily::power_of_two);
  EXPECT_EQ(parse_schedule("linear"), AlphaSchedule::stagger);
  try {
    parse_schedule("spiral");
    FAIL() << "spiral parsed";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(),
                 "model.schedule must be fixed, stagger, coprime or learned, got 'spiral'");
  }
  try {
    parse_attention_family("ring");
    FAIL() << "ring parsed";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(
        e.what(),
        "model.attention must be dense, window, fibonacci, power_of_two or chunk, got 'ring'");
  }
}

// A learned alpha starts at model.entmax_alpha: before training the model equals the one with
// that alpha fixed (same seed, same weights; 1 + sigmoid(0) = 1.5 exactly), to rounding.
// Training moves alpha and the per-query projections: every new parameter gets a gradient.
TEST(Attention, LearnedAlphaAndPerQueryScalingStartWhereTheyShouldAndTrain) {
  const auto tokens = torch::randint(0, 256, {2, 30}, torch::kInt64);
  for (const auto attention : {AttentionFamily::dense, AttentionFamily::fibonacci}) {
    auto fixed = micro(attention, AlphaSchedule::fixed, Normalizer::entmax, Positions::nape);
    auto learned = fixed;
    learned.entmax_alpha_mode = EntmaxAlpha::learned;
    torch::manual_seed(9);
    Gpt a(fixed);
    torch::manual_seed(9);
    Gpt b(learned);
    torch::NoGradGuard no_grad;
    EXPECT_LT((a(tokens) - b(tokens)).abs().max().item<double>(), 1e-5) << to_string(attention);
  }
  for (const auto attention : {AttentionFamily::dense, AttentionFamily::fibonacci}) {
    Gpt net(per_query_learned(
        micro(attention, AlphaSchedule::fixed, Normalizer::asentmax, Positions::nape)));
    perturb(net, 0.05);
    const auto logits = net(tokens);
    ASSERT_TRUE(torch::isfinite(logits).all().item<bool>());
    logits.logsumexp(-1).mean().backward();
    for (const auto& name : {"alpha_logit", "delta", "scale_beta.weight", "scale_gamma.weight"}) {
      const auto p = net->blocks[0]->attn->named_parameters()[name];
      ASSERT_TRUE(p.grad().defined()) << name;
      EXPECT_GT(p.grad().abs().sum().item<double>(), 0) << name << " " << to_string(attention);
    }
  }
}

// The model options model.entmax_scale = per_query and model.entmax_alpha_mode = learned,
// from their definition: q, k, v from the layer's qkv weights; alpha_h = 1 + sigmoid(theta_h);
// beta_i = softplus(w_beta,h . x_i + b_h), gamma_i = 2 tanh(w_gamma,h . x_i + b_h) on the NoPE
// heads of NAPE (delta = 1, beta = 0 on its ALiBi heads, i.e. c = 1); through the float64
// dense reference (kernels/cpu/reference_entmax_attention), then the output projection. The
// layer (float32, the op's kernels) agrees to float32 rounding, dense and over the Fibonacci
// key set.
TEST(Attention, PerQueryScalingAndLearnedAlphaAreTheDefinition) {
  for (const auto attention : {AttentionFamily::dense, AttentionFamily::fibonacci}) {
    auto c = per_query_learned(
        micro(attention, AlphaSchedule::fixed, Normalizer::asentmax, Positions::nape));
    c.heads = 4;  // 2 NoPE + 2 ALiBi heads
    c.d_model = 32;
    torch::manual_seed(21);
    Gpt net(c);
    perturb(net, 0.3);
    const auto& layer = net->blocks[0]->attn;
    const int64_t b = 2, t = 29, h = c.heads, hd = c.d_model / c.heads;
    const auto x = torch::randn({b, t, c.d_model});
    torch::NoGradGuard no_grad;
    const auto got = layer->forward(x).to(torch::kFloat64);

    auto param = [&](const std::string& name) {
      return layer->named_parameters()[name].detach().to(torch::kFloat64);
    };
    const auto xd = x.to(torch::kFloat64);
    const auto qkv = torch::matmul(xd, param("qkv.weight").t()).view({b, t, 3, h, hd});
    auto head_major = [&](int64_t i) {
      return qkv.select(2, i).permute({0, 2, 1, 3}).contiguous();  // [b, h, t, hd]
    };
    const auto q = head_major(0), k = head_major(1), v = head_major(2);
    const auto alpha = (1.0 + torch::sigmoid(param("alpha_logit"))).contiguous();
    const auto slopes = attention::position_slopes(c.positions, h).to(torch::kFloat64);
    const auto nope = (slopes == 0).to(torch::kFloat64);
    ASSERT_EQ(nope.sum().item<double>(), 2.0);
    const auto delta = (param("delta") * nope + (1 - nope)).contiguous();
    auto per_query = [&](const std::string& module) {  // [b, t, h] -> [b, h, t]
      return (torch::matmul(xd, param(module + ".weight").t()) + param(module + ".bias"))
          .permute({0, 2, 1});
    };
    const auto beta =
        (torch::nn::functional::softplus(per_query("scale_beta")) * nope.view({1, h, 1}))
            .contiguous();
    const auto gamma = (2.0 * torch::tanh(per_query("scale_gamma"))).contiguous();
    std::vector<double> offsets;
    int64_t window = t;
    if (attention != AttentionFamily::dense) {
      window = c.window;
      for (int64_t o : layer->integer_offsets()) {
        if (o >= window) offsets.push_back(static_cast<double>(o));
      }
      ASSERT_FALSE(offsets.empty());
    }
    kernels::EntmaxAttentionParams p;
    p.base.batch_heads = b * h;
    p.base.seq_len = t;
    p.base.head_dim = hd;
    p.base.window = window;
    p.base.offsets = offsets.data();
    p.base.num_offsets = static_cast<int64_t>(offsets.size());
    p.base.scale = 1.0 / std::sqrt(static_cast<double>(hd));
    p.num_heads = h;
    p.alpha = alpha.data_ptr<double>();
    p.log_n_scaling = true;
    p.per_query_scale = true;
    p.delta = delta.data_ptr<double>();
    p.beta = beta.data_ptr<double>();
    p.gamma = gamma.data_ptr<double>();
    p.alibi_slopes = slopes.contiguous().data_ptr<double>();
    auto flat = [](const torch::Tensor& a) {
      const auto c = a.contiguous();
      return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
    };
    const auto out = kernels::reference::entmax_forward(p, flat(q), flat(k), flat(v));
    const auto attended =
        torch::from_blob(const_cast<double*>(out.data()), {b, h, t, hd}, torch::kFloat64)
            .permute({0, 2, 1, 3})
            .reshape({b, t, c.d_model});
    const auto want = torch::matmul(attended, param("proj.weight").t());
    // The scaling is not trivial here: the per-query multipliers spread, alpha left 1.5.
    EXPECT_GT((beta.select(1, 0).max() - beta.select(1, 0).min()).item<double>(), 0.05);
    EXPECT_GT((alpha - 1.5).abs().max().item<double>(), 0.01);
    const double err = ((got - want).norm() / want.norm()).item<double>();
    EXPECT_LT(err, 1e-5) << to_string(attention);
  }
}

TEST(Attention, EntmaxModelOptionsNeedTheirNormalizer) {
  auto expect_error = [](ModelConfig c, const std::string& fragment) {
    try {
      validate(c);
      FAIL() << "accepted: " << fragment;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  auto c = micro(AttentionFamily::fibonacci, AlphaSchedule::fixed, Normalizer::entmax);
  c.entmax_scale = EntmaxScale::per_query;
  expect_error(c, "model.entmax_scale = 'per_query' needs model.normalizer = 'asentmax'");
  c = micro(AttentionFamily::fibonacci, AlphaSchedule::fixed, Normalizer::ssmax);
  c.entmax_alpha_mode = EntmaxAlpha::learned;
  expect_error(c, "model.entmax_alpha_mode = 'learned' needs model.normalizer = 'entmax'");
  c.normalizer = Normalizer::asentmax;
  c.entmax_alpha = 2.0;
  expect_error(c, "model.entmax_alpha must be < 2");
  try {
    parse_entmax_scale("per_token");
    FAIL() << "per_token parsed";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "model.entmax_scale must be per_head or per_query, got 'per_token'");
  }
}

}  // namespace
}  // namespace reach::model
