// The decode step replayed from a CUDA graph (infer/decode_graph) against the same step run
// eagerly. On a GPU both run the same kernels on the same rows (the graph only fixes where they
// read the positions and lengths), so float32 logits agree to 1e-5 relative to the largest
// logit (the inference bar; a wrong row, position or length is an O(1) error), greedy tokens are
// identical, and every step but the first is a replay. Without a GPU the refusals are tested.
#include "infer/decode_graph.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "infer/batch_session.hpp"
#include "infer/session.hpp"
#include "model/attention/kv_cache.hpp"
#include "tests/infer/micro_decode_models.hpp"
#include "train/device.hpp"

namespace reach::infer {
namespace {

using model::AlphaSchedule;
using model::AttentionFamily;
using model::Normalizer;

using testing::expect_error;
using testing::random_tokens;
using testing::relative_error;

model::Gpt make_model(AttentionFamily attention, AlphaSchedule schedule = AlphaSchedule::stagger,
                      int64_t kv_heads = 0) {
  return testing::micro_model(attention, schedule, Normalizer::softmax, kv_heads);
}

// Greedy steps of ragged requests through two sessions, one replaying a graph; a fifth request
// joins halfway (the graph is captured again). The worst logit error.
double worst_graph_vs_eager(model::Gpt net, int64_t steps, bool bf16) {
  const train::Bf16Autocast autocast(bf16);
  const int64_t capacity = 2 * steps + 60;
  BatchSession graph(net, 5, capacity), eager(net, 5, capacity);
  graph.use_cuda_graph(true);
  std::vector<int64_t> next;
  for (const auto& [n, seed] :
       std::vector<std::pair<int64_t, int64_t>>{{5, 1}, {37, 2}, {1, 3}, {12, 4}}) {
    const auto prompt = random_tokens(n, seed);
    graph.add(prompt);
    next.push_back(eager.add(prompt)[-1].argmax().item<int64_t>());
  }
  double worst = 0;
  int64_t captures = 0;
  for (int64_t s = 0; s < steps; ++s) {
    if (s == steps / 2) {
      const auto prompt = random_tokens(9, 5);
      graph.add(prompt);
      next.push_back(eager.add(prompt)[-1].argmax().item<int64_t>());
      ++captures;
    }
    const auto got = graph.step(next), want = eager.step(next);
    worst = std::max(worst, relative_error(got, want));
    for (size_t i = 0; i < next.size(); ++i) {
      const auto row = static_cast<int64_t>(i);
      EXPECT_EQ(got[row].argmax().item<int64_t>(), want[row].argmax().item<int64_t>())
          << "request " << i << ", step " << s;
      next[i] = want[row].argmax().item<int64_t>();
    }
  }
  // The first step after each (re)build runs eagerly; every other one is a replay.
  EXPECT_EQ(graph.graph_steps(), steps - 1 - captures);
  EXPECT_EQ(eager.graph_steps(), 0);
  for (int64_t i = 0; i < graph.requests(); ++i) EXPECT_EQ(graph.length(i), eager.length(i));
  return worst;
}

TEST(DecodeGraph, RefusesWhatItCannotReplay) {
  auto net = make_model(AttentionFamily::fibonacci);
  model::attention::KvCache cache(net->config().layers);
  EXPECT_FALSE(DecodeGraph::problem(net, cache).empty());
  expect_error([&] { DecodeGraph graph(net, cache); }, "decode graph: ");
  if (!DecodeGraph::available()) {
    EXPECT_NE(DecodeGraph::problem(net, cache).find("no CUDA"), std::string::npos);
    return;
  }
  EXPECT_NE(DecodeGraph::problem(net, cache).find("not a CUDA device"), std::string::npos);
  if (!torch::cuda::is_available()) return;
  net->to(torch::kCUDA);
  EXPECT_NE(DecodeGraph::problem(net, cache).find("must be batched"), std::string::npos);
  auto c = net->config();
  c.schedule = AlphaSchedule::learned;
  model::Gpt unfrozen(c);
  unfrozen->to(torch::kCUDA);
  EXPECT_NE(DecodeGraph::problem(unfrozen, cache).find("freeze"), std::string::npos);
  c = net->config();
  c.normalizer = Normalizer::entmax;
  model::Gpt entmax(c);
  entmax->to(torch::kCUDA);
  EXPECT_NE(DecodeGraph::problem(entmax, cache).find("softmax only"), std::string::npos);
}

TEST(DecodeGraph, SplitIntoRequestsNeedsAFilledCapacityCache) {
  model::attention::LayerKvCache empty;
  expect_error([&] { empty.split_into_requests(); }, "needs a capacity cache holding tokens");
  model::attention::LayerKvCache layer;
  layer.capacity = 10;
  layer.append(torch::randn({3, 2, 4, 8}), torch::randn({3, 2, 4, 8}));
  layer.split_into_requests();
  EXPECT_EQ(layer.lengths, (std::vector<int64_t>{4, 4, 4}));
  expect_error([&] { layer.split_into_requests(); }, "on a batched cache");
  layer.advance_batched();
  EXPECT_EQ(layer.length(), 5);
  // write_batched: one token per request, int64 rows on the cache's device.
  const auto token = torch::randn({3, 2, 1, 8});
  expect_error([&] { layer.write_batched(token, token, torch::zeros({2}, torch::kLong)); },
               "one token per request (3 requests)");
  expect_error([&] { layer.write_batched(token, token, torch::zeros({3}, torch::kInt)); },
               "rows as int64");
  layer.write_batched(token, token, torch::full({3}, 5, torch::kLong));
  EXPECT_TRUE(torch::equal(layer.key_buffer.select(2, 5), token.select(2, 0)));
  EXPECT_EQ(layer.length(), 5);  // the host lengths wait for advance_batched
  for (int i = 0; i < 5; ++i) layer.advance_batched();
  expect_error([&] { layer.advance_batched(); }, "one more exceeds its capacity 10");
  model::attention::LayerKvCache unbatched;
  expect_error([&] { unbatched.advance_batched(); }, "not batched");
}

TEST(DecodeGraphCuda, ReplaysEqualEagerSteps) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  struct Case {
    const char* name;
    model::Gpt net;
  };
  const std::vector<Case> cases{
      {"dense", make_model(AttentionFamily::dense)},
      {"window", make_model(AttentionFamily::window)},
      {"fibonacci stagger", make_model(AttentionFamily::fibonacci)},
      {"power_of_two learned (frozen)",
       make_model(AttentionFamily::power_of_two, AlphaSchedule::learned)},
      {"fibonacci grouped-query (1 KV head for 2 query heads)",
       make_model(AttentionFamily::fibonacci, AlphaSchedule::stagger, 1)},
  };
  for (auto c : cases) {
    c.net->to(torch::kCUDA);
    const double error = worst_graph_vs_eager(c.net, 45, /*bf16=*/false);  // past reach 40
    EXPECT_LT(error, 1e-5) << c.name;
    RecordProperty(c.name, std::to_string(error));
  }
}

// Under bf16 autocast: the graph's casts are its own kernels (the autocast cache is off while it
// is captured) computing the same roundings, so the same bound.
TEST(DecodeGraphCuda, ReplaysEqualEagerStepsUnderBf16Autocast) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto net = make_model(AttentionFamily::fibonacci);
  net->to(torch::kCUDA);
  const double error = worst_graph_vs_eager(net, 30, /*bf16=*/true);
  EXPECT_LT(error, 1e-5);
  RecordProperty("bf16 relative error", std::to_string(error));
}

// Budgets are host values per step: such a step runs eagerly; a full request is an error
// before anything is replayed.
TEST(DecodeGraphCuda, BudgetsStepEagerlyAndAFullRequestIsAnError) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto net = make_model(AttentionFamily::fibonacci);
  net->to(torch::kCUDA);
  BatchSession budgeted(net, 1, 40);
  budgeted.use_cuda_graph(true);
  budgeted.add(random_tokens(6, 1), parse_budget_rule("rungs=1"));
  for (int64_t s = 0; s < 4; ++s) budgeted.step({s});
  EXPECT_EQ(budgeted.graph_steps(), 0);

  BatchSession small(net, 1, 8);
  small.use_cuda_graph(true);
  small.add(random_tokens(5, 2));
  for (int64_t s = 0; s < 3; ++s) small.step({s});
  EXPECT_EQ(small.graph_steps(), 2);
  expect_error([&] { small.step({1}); }, "one more exceeds its capacity 8");
}

// One request (reach generate's Session): steps replayed from the graph equal eager steps of a
// second Session on the same GPU (float32, 1e-5, greedy tokens identical); every step after the
// first is a replay; a budget other than "full" is refused with its reason and steps eagerly.
TEST(DecodeGraphCuda, SessionStepsReplayedEqualEagerSteps) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (const auto family : {AttentionFamily::fibonacci, AttentionFamily::dense}) {
    auto net = make_model(family);
    net->to(torch::kCUDA);
    Session graph(net, 90), eager(net, 90);
    graph.use_cuda_graph(true);
    const auto prompt = random_tokens(11, 7);
    graph.prefill(prompt);
    auto next = eager.prefill(prompt)[-1].argmax().item<int64_t>();
    double worst = 0;
    const int64_t steps = 50;  // past the offsets' reach (40)
    for (int64_t s = 0; s < steps; ++s) {
      const auto got = graph.step(next), want = eager.step(next);
      worst = std::max(worst, relative_error(got, want));
      EXPECT_EQ(got.argmax().item<int64_t>(), want.argmax().item<int64_t>()) << "step " << s;
      next = want.argmax().item<int64_t>();
    }
    EXPECT_LT(worst, 1e-5) << static_cast<int>(family);
    EXPECT_EQ(graph.graph_steps(), steps - 1);
    EXPECT_TRUE(graph.graph_refused().empty()) << graph.graph_refused();
    EXPECT_EQ(graph.length(), eager.length());
    RecordProperty(family == AttentionFamily::dense ? "dense" : "fibonacci", std::to_string(worst));
  }
  auto net = make_model(AttentionFamily::fibonacci);
  net->to(torch::kCUDA);
  Session budgeted(net, 20, parse_budget_rule("rungs=1"));
  budgeted.use_cuda_graph(true);
  budgeted.prefill(random_tokens(5, 8));
  budgeted.step(1);
  budgeted.step(2);
  EXPECT_EQ(budgeted.graph_steps(), 0);
  EXPECT_NE(budgeted.graph_refused().find("rungs=1"), std::string::npos)
      << budgeted.graph_refused();
}

}  // namespace
}  // namespace reach::infer
