// Prefill + token-by-token decode against the model's full forward, for every family: the
// logits at every position must agree. Decode runs each layer through the single-query
// decode kernel (float64 scores, float32 cache) while the full forward runs the fused
// float32 ops (or the matmul path for dense): the bar is 1e-5 relative to the largest logit,
// the inference bar (float32 over a few hundred terms differs by ~1e-6).
#include "infer/session.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "infer/budgeted_forward.hpp"
#include "infer/generator.hpp"
#include "model/gpt.hpp"

namespace reach::infer {
namespace {

using model::AlphaSchedule;
using model::AttentionFamily;
using model::Normalizer;
using model::Positions;

struct Family {
  std::string name;
  AttentionFamily attention;
  AlphaSchedule schedule = AlphaSchedule::stagger;
  Normalizer normalizer = Normalizer::softmax;
  Positions positions = Positions::rope;
  // The main paper's model options: grouped-query attention (2 query heads over 1 K/V head),
  // SwiGLU, RMSNorm, no biases, its offset convention.
  bool paper_options = false;
};

std::vector<Family> families() {
  return {
      {"dense", AttentionFamily::dense},
      {"window", AttentionFamily::window},
      {"fibonacci stagger", AttentionFamily::fibonacci},
      {"fibonacci fixed", AttentionFamily::fibonacci, AlphaSchedule::fixed},
      {"fibonacci learned (frozen)", AttentionFamily::fibonacci, AlphaSchedule::learned},
      {"power_of_two coprime", AttentionFamily::power_of_two, AlphaSchedule::coprime},
      {"fibonacci entmax", AttentionFamily::fibonacci, AlphaSchedule::stagger, Normalizer::entmax},
      {"window asentmax + nape", AttentionFamily::window, AlphaSchedule::stagger,
       Normalizer::asentmax, Positions::nape},
      {"dense ssmax", AttentionFamily::dense, AlphaSchedule::stagger, Normalizer::ssmax},
      {"dense alibi", AttentionFamily::dense, AlphaSchedule::stagger, Normalizer::softmax,
       Positions::alibi},
      {"fibonacci nope", AttentionFamily::fibonacci, AlphaSchedule::stagger, Normalizer::softmax,
       Positions::nope},
      {"fibonacci stagger, paper model (GQA, SwiGLU, RMSNorm)", AttentionFamily::fibonacci,
       AlphaSchedule::stagger, Normalizer::softmax, Positions::rope, true},
      {"dense, paper model (GQA, SwiGLU, RMSNorm)", AttentionFamily::dense, AlphaSchedule::stagger,
       Normalizer::softmax, Positions::rope, true},
  };
}

model::Gpt make_model(const Family& f) {
  auto c = model::preset("micro");
  c.attention = f.attention;
  c.schedule = f.schedule;
  c.normalizer = f.normalizer;
  c.positions = f.positions;
  c.alpha_min = 1.0;
  c.alpha_max = 2.3;  // learned: alpha * b is fractional, so freezing changes the offsets
  c.reach = 40;
  if (f.paper_options) {
    c.kv_heads = 1;
    c.mlp = model::Mlp::swiglu;
    c.norm = model::Norm::rmsnorm;
    c.bias = false;
    c.convention = pattern::OffsetConvention::paper;
    c.window = 4;
  }
  torch::manual_seed(5);
  model::Gpt net(c);
  // Non-trivial normaliser parameters (they start at values that make them identities).
  torch::NoGradGuard no_grad;
  for (auto& p : net->named_parameters()) {
    if (p.key().ends_with("attn.beta") || p.key().ends_with("attn.gamma")) {
      p.value().uniform_(0.2, 0.6);
    }
  }
  net->eval();
  return net;
}

std::string scientific(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2e", x);
  return buf;
}

double relative_error(const torch::Tensor& got, const torch::Tensor& want) {
  return (got - want).abs().max().item<double>() / want.abs().max().item<double>();
}

// Prefill the first `prompt` tokens, then decode the rest one at a time; logits [T, V].
torch::Tensor incremental_logits(model::Gpt net, const std::vector<int64_t>& tokens, int64_t prompt,
                                 const BudgetRule& budget = {}) {
  Session session(net, static_cast<int64_t>(tokens.size()), budget);
  std::vector<torch::Tensor> rows{session.prefill({tokens.begin(), tokens.begin() + prompt})};
  for (size_t i = static_cast<size_t>(prompt); i < tokens.size(); ++i) {
    rows.push_back(session.step(tokens[i]).unsqueeze(0));
  }
  // Every decode step went through the decode kernel (it counts the keys it reads).
  const auto steps = static_cast<int64_t>(tokens.size()) - prompt;
  EXPECT_EQ(session.usage().queries, steps * net->config().layers * net->config().heads);
  return torch::cat(rows, 0);
}

std::vector<int64_t> random_tokens(int64_t n, int64_t seed) {
  torch::manual_seed(static_cast<uint64_t>(seed));
  const auto t = torch::randint(0, 256, {n}, torch::kLong);
  return {t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + n};
}

torch::Tensor full_logits(model::Gpt net, const std::vector<int64_t>& tokens,
                          const model::attention::AttentionBudget& budget = {}) {
  torch::NoGradGuard no_grad;
  model::attention::ForwardContext context;
  context.budget = budget;
  const auto x = torch::tensor(tokens, torch::kLong).view({1, -1});
  return net->forward_with(context, x)[0];
}

TEST(Session, PrefillPlusDecodeEqualsTheFullForwardForEveryFamily) {
  const auto tokens = random_tokens(90, 1);  // beyond reach 40 and window 8
  for (const auto& f : families()) {
    auto net = make_model(f);
    if (f.schedule == AlphaSchedule::learned) {
      const auto learned = full_logits(net, tokens);
      net->freeze_schedules();
      // Freezing changes the model (the offsets alpha * b were fractional) ...
      EXPECT_GT(relative_error(full_logits(net, tokens), learned), 1e-4) << f.name;
    }
    const auto want = full_logits(net, tokens);
    for (int64_t prompt : {1, 17}) {
      const double error = relative_error(incremental_logits(net, tokens, prompt), want);
      EXPECT_LT(error, 1e-5) << f.name << ", prompt " << prompt;
      RecordProperty(f.name + ", prompt " + std::to_string(prompt), std::to_string(error));
    }
  }
}

// The chunk family (docs/chunk_attention.md) and its ablation switches: 4 layers (window
// layers 0-1, the chunk encoder at 2, retrieval at 2-3), S = 4, k = 3, W = 5.
struct ChunkVariant {
  std::string name;
  model::ChunkLandmark landmark = model::ChunkLandmark::cls;
  int64_t encoder_layers = 1;
  model::ChunkScoring scoring = model::ChunkScoring::retrieval;
  model::ChunkResidual residual = model::ChunkResidual::bypass;
  model::ChunkSparsity sparsity = model::ChunkSparsity::enforced;
  kernels::ChunkWeighting weighting = kernels::ChunkWeighting::softmax;
};

std::vector<ChunkVariant> chunk_variants() {
  using model::ChunkLandmark;
  return {
      {"chunk: CLS encoder, bypass, enforced sparsity"},
      {"chunk: landmark = mean of the encoded tokens", ChunkLandmark::mean},
      {"chunk: landmark = mean_keys, no encoder (no CLS)", ChunkLandmark::mean_keys, 0},
      {"chunk: MoBA scoring", ChunkLandmark::mean_keys, 0, model::ChunkScoring::moba},
      {"chunk: standard residual (no bypass)", ChunkLandmark::cls, 1,
       model::ChunkScoring::retrieval, model::ChunkResidual::standard},
      {"chunk: no enforced sparsity, stick-breaking", ChunkLandmark::cls, 1,
       model::ChunkScoring::retrieval, model::ChunkResidual::bypass, model::ChunkSparsity::none,
       kernels::ChunkWeighting::stick_breaking},
  };
}

model::Gpt make_chunk_model(const ChunkVariant& v) {
  auto c = model::preset("micro");  // d 32, 2 heads
  c.layers = 4;
  c.attention = AttentionFamily::chunk;
  c.window = 5;
  c.chunk_size = 4;
  c.chunk_top_k = 3;
  c.chunk_encoder_layers = v.encoder_layers;
  c.chunk_encoder_mlp_ratio = 2;
  c.chunk_landmark = v.landmark;
  c.chunk_scoring = v.scoring;
  c.chunk_residual = v.residual;
  c.chunk_sparsity = v.sparsity;
  c.chunk_weighting = v.weighting;
  torch::manual_seed(9);
  model::Gpt net(c);
  net->eval();
  return net;
}

TEST(Session, ChunkFamilyPrefillPlusDecodeEqualsTheFullForward) {
  const auto tokens = random_tokens(90, 11);  // 22 chunks, far beyond k = 3 and W = 5
  const auto first = full_logits(make_chunk_model(chunk_variants()[0]), tokens);
  for (const auto& v : chunk_variants()) {
    auto net = make_chunk_model(v);
    const auto want = full_logits(net, tokens);
    // Each switch changes the model (same seed, so the shared parameters are equal).
    if (v.name != chunk_variants()[0].name) {
      const double change = relative_error(want, first);
      EXPECT_GT(change, 1e-4) << v.name;
      RecordProperty(v.name + ": change vs the default model", scientific(change));
    }
    for (int64_t prompt : {1, 17}) {  // 17: the prompt ends inside a chunk
      const double error = relative_error(incremental_logits(net, tokens, prompt), want);
      EXPECT_LT(error, 1e-5) << v.name << ", prompt " << prompt;
      RecordProperty(v.name + ", prompt " + std::to_string(prompt), scientific(error));
    }
  }
}

// Chunk budgets per request: a fixed k and rules of the candidates C decode as the full
// forward at that budget; the dynamic chunk mass decodes as the whole-sequence forward under
// it (both through the decode kernel's cut), reads fewer chunks, and changes the logits.
TEST(Session, ChunkBudgetsDecodeAsTheFullForwardAtThatBudget) {
  const auto tokens = random_tokens(90, 12);
  for (const auto& v : {chunk_variants()[0], chunk_variants()[5]}) {
    auto net = make_chunk_model(v);
    const auto unbudgeted = full_logits(net, tokens);
    for (const std::string rule :
         {"chunks=1", "chunks=6", "chunks=sqrt(c)", "chunks=0.25*c", "chunks=2*log2(c)",
          "chunk_mass=0.6", "chunk_mass=0.9,chunks=4"}) {
      const auto budget = parse_budget_rule(rule);
      model::attention::BudgetUsage whole;
      torch::Tensor want;
      {
        torch::NoGradGuard no_grad;
        want = budgeted_logits(net, torch::tensor(tokens, torch::kLong).view({1, -1}), budget,
                               &whole)[0];
      }
      EXPECT_GT(relative_error(want, unbudgeted), 1e-4) << v.name << ", " << rule;  // it matters
      if (!budget.is_dynamic()) {
        // The full operator at that budget (no decode kernel) agrees with the counted forward.
        EXPECT_LT(relative_error(full_logits(net, tokens, attention_budget(budget.at(90))), want),
                  1e-5)
            << v.name << ", " << rule;
      }
      const double error = relative_error(incremental_logits(net, tokens, 17, budget), want);
      EXPECT_LT(error, 1e-5) << v.name << ", " << rule;
      RecordProperty(v.name + ", " + rule, scientific(error));
    }
  }
}

TEST(Session, ChunkMassReadsFewerChunksAndReportsThem) {
  const auto tokens = random_tokens(90, 13);
  auto net = make_chunk_model(chunk_variants()[0]);
  Session full(net, 90), cut(net, 90, parse_budget_rule("chunk_mass=0.5"));
  full.prefill({tokens.begin(), tokens.begin() + 30});
  cut.prefill({tokens.begin(), tokens.begin() + 30});
  for (size_t i = 30; i < tokens.size(); ++i) {
    full.step(tokens[i]);
    cut.step(tokens[i]);
  }
  EXPECT_EQ(full.usage().queries, cut.usage().queries);
  // Window keys are the same; the retrieval path reads fewer chunks of S = 4 keys.
  EXPECT_LT(cut.usage().keys, full.usage().keys);
  EXPECT_EQ((full.usage().keys - cut.usage().keys) % 4, 0);
  // The cut needs the CPU decode kernel without gradients: a forward with gradients refuses.
  model::attention::ForwardContext context;
  context.budget.chunk_mass = 0.5;
  try {
    net->forward_with(context, torch::tensor(tokens, torch::kLong).view({1, -1}));
    FAIL() << "no error for a chunk mass with gradients";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("chunk_mass (the dynamic chunk budget) runs on the CPU"),
              std::string::npos)
        << e.what();
  }
}

TEST(Session, LearnedScheduleDecodesUnfrozenToo) {
  // The kernel interpolates fractional offsets as the learned op does.
  auto net = make_model({"learned", AttentionFamily::fibonacci, AlphaSchedule::learned});
  const auto tokens = random_tokens(60, 2);
  EXPECT_LT(relative_error(incremental_logits(net, tokens, 5), full_logits(net, tokens)), 1e-5);
}

TEST(Session, FixedBudgetDecodeEqualsTheFullForwardAtThatBudget) {
  const auto tokens = random_tokens(80, 3);
  auto net = make_model({"fibonacci", AttentionFamily::fibonacci});
  for (const std::string rule : {"rungs=1", "window=3,rungs=2", "window=12"}) {
    const auto budget = parse_budget_rule(rule);
    const auto resolved = budget.at(80);
    model::attention::AttentionBudget fixed;
    fixed.window = resolved.window;
    fixed.rungs = resolved.rungs;
    const auto want = full_logits(net, tokens, fixed);
    EXPECT_GT(relative_error(want, full_logits(net, tokens)), 1e-4) << rule;  // it matters
    EXPECT_LT(relative_error(incremental_logits(net, tokens, 10, budget), want), 1e-5) << rule;
  }
}

TEST(Session, MassBudgetReadsFewerKeysAndReportsThem) {
  const auto tokens = random_tokens(70, 4);
  auto net = make_model({"dense", AttentionFamily::dense});
  Session full(net, 70), cut(net, 70, parse_budget_rule("mass=0.5"));
  full.prefill({tokens.begin(), tokens.begin() + 10});
  cut.prefill({tokens.begin(), tokens.begin() + 10});
  for (size_t i = 10; i < tokens.size(); ++i) {
    full.step(tokens[i]);
    cut.step(tokens[i]);
  }
  // Dense: decode steps at lengths 11..70 read every key: mean 40.5.
  const auto mean = [](const model::attention::BudgetUsage& u) {
    return static_cast<double>(u.keys) / static_cast<double>(u.queries);
  };
  EXPECT_DOUBLE_EQ(mean(full.usage()), 40.5);
  EXPECT_LT(mean(cut.usage()), 0.8 * mean(full.usage()));
}

TEST(Session, CapacityAndEmptyPromptAreClearErrors) {
  auto net = make_model({"fibonacci", AttentionFamily::fibonacci});
  Session session(net, 4);
  EXPECT_THROW(session.prefill({}), std::invalid_argument);
  session.prefill({1, 2, 3});
  session.step(4);
  try {
    session.step(5);
    FAIL() << "no error past the capacity";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("exceed its capacity 4"), std::string::npos) << e.what();
  }
}

TEST(Generate, GreedyRepeatsAndSeededSamplingRepeats) {
  auto net = make_model({"fibonacci", AttentionFamily::fibonacci});
  const auto text = TokenText::load("byte", "");
  GenerationRequest r;
  r.prompt = random_tokens(12, 6);
  r.max_new_tokens = 30;
  const auto a = generate(net, text, r), b = generate(net, text, r);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.tokens.size(), 30u);
  // Greedy decode equals the argmax of the full forward over prompt + generated tokens.
  auto all = r.prompt;
  all.insert(all.end(), a.tokens.begin(), a.tokens.end());
  const auto logits = full_logits(net, all);
  for (size_t i = 0; i < a.tokens.size(); ++i) {
    EXPECT_EQ(logits[static_cast<int64_t>(r.prompt.size() + i - 1)].argmax().item<int64_t>(),
              a.tokens[i])
        << i;
  }
  r.sampling = {1.0, 20, 0.9, 42};
  const auto c = generate(net, text, r), d = generate(net, text, r);
  EXPECT_EQ(c.tokens, d.tokens);
  r.sampling.seed = 43;
  EXPECT_NE(generate(net, text, r).tokens, c.tokens);
}

TEST(Generate, StopStringsEndTheTextAndStreamWhatIsFinal) {
  auto net = make_model({"dense", AttentionFamily::dense});
  const auto text = TokenText::load("byte", "");
  GenerationRequest r;
  r.prompt = random_tokens(8, 7);
  r.max_new_tokens = 40;
  r.sampling = {1.0, 0, 1.0, 3};
  const auto free_run = generate(net, text, r);
  ASSERT_GE(free_run.text.size(), 12u);
  // Stop at a string that appears in the free run: the same text up to it, the rest cut.
  const std::string stop = free_run.text.substr(8, 3);
  const auto cut_at = free_run.text.find(stop);
  r.stop = {stop};
  std::string streamed;
  const auto stopped = generate(net, text, r, [&](const std::string& s) { streamed += s; });
  EXPECT_EQ(stopped.text, free_run.text.substr(0, cut_at));
  EXPECT_EQ(streamed, stopped.text);
  EXPECT_EQ(stopped.stop_reason, "stop string");
  EXPECT_EQ(free_run.stop_reason, "max new tokens");
}

TEST(Generate, BadRequestsAreClearErrors) {
  auto net = make_model({"window", AttentionFamily::window});
  const auto text = TokenText::load("byte", "");
  auto expect_error = [&](GenerationRequest r, const std::string& fragment) {
    try {
      generate(net, text, r);
      ADD_FAILURE() << "no error, expected: " << fragment;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  GenerationRequest good;
  good.prompt = {1, 2, 3};
  good.max_new_tokens = 4;
  auto r = good;
  r.prompt.clear();
  expect_error(r, "empty prompt");
  r = good;
  r.max_context = 5;
  expect_error(r, "prompt (3 tokens) + max new tokens (4) exceed the context limit 5");
  r = good;
  r.sampling.temperature = -1;
  expect_error(r, "temperature must be >= 0");
  r = good;
  r.sampling.top_p = 0;
  expect_error(r, "top_p must be in (0, 1]");
  r = good;
  r.prompt = {1, 300};
  expect_error(r, "prompt token 300 is outside the vocabulary (256)");
  r = good;
  r.stop = {""};
  expect_error(r, "stop strings must not be empty");
  r = good;
  r.max_new_tokens = -1;
  expect_error(r, "max new tokens must be >= 0");
}

// On a GPU (float32, no autocast): decode through the GPU decode op (the CUDA decode kernel;
// SDPA for dense) against the full forward on the GPU (the fused CUDA kernels). Bound 1e-4 relative
// to the largest logit: both sides are float32 on the GPU with different summation orders (the CUDA
// kernels accumulate blockwise); an indexing or mask mistake is O(1). Entmax layers fall back to a
// full forward over the cache on the GPU and must agree too.
TEST(SessionCuda, PrefillPlusDecodeEqualsTheFullForwardOnTheGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const auto tokens = random_tokens(90, 1);
  for (const auto& f : families()) {
    auto net = make_model(f);
    if (f.schedule == AlphaSchedule::learned) net->freeze_schedules();
    net->to(torch::kCUDA);
    torch::NoGradGuard no_grad;
    model::attention::ForwardContext context;
    const auto x = torch::tensor(tokens, torch::kLong).view({1, -1}).to(torch::kCUDA);
    const auto want = net->forward_with(context, x)[0].to(torch::kCPU);
    Session session(net, static_cast<int64_t>(tokens.size()));
    std::vector<torch::Tensor> rows{session.prefill({tokens.begin(), tokens.begin() + 17})};
    for (size_t i = 17; i < tokens.size(); ++i)
      rows.push_back(session.step(tokens[i]).unsqueeze(0));
    const double error = relative_error(torch::cat(rows, 0), want);
    EXPECT_LT(error, 1e-4) << f.name;
    const bool on_the_decode_op =
        f.normalizer != Normalizer::entmax && f.normalizer != Normalizer::asentmax;
    if (on_the_decode_op) {
      EXPECT_EQ(session.usage().queries, (90 - 17) * net->config().layers * net->config().heads)
          << f.name << ": decode steps did not all go through the decode op";
    }
    RecordProperty(f.name, std::to_string(error));
  }
}

}  // namespace
}  // namespace reach::infer
