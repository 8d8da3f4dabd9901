// Batched decode: requests of different lengths and budgets advanced together, one forward
// per step, against each request run alone in a Session. The attention of each request is
// the same kernel call on the same rows; the batched projections and MLP may sum in another
// order (BLAS blocks by batch size), so logits agree to 1e-5 relative to the largest logit
// (the inference bar; measured ~1e-7), and greedy tokens are identical.
#include "infer/batch_session.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "infer/session.hpp"
#include "tests/infer/micro_decode_models.hpp"

namespace reach::infer {
namespace {

using model::AlphaSchedule;
using model::AttentionFamily;
using model::Normalizer;

using testing::expect_error;
using testing::random_tokens;
using testing::relative_error;

model::Gpt make_model(AttentionFamily attention, AlphaSchedule schedule = AlphaSchedule::stagger,
                      Normalizer normalizer = Normalizer::softmax, int64_t kv_heads = 0) {
  return testing::micro_model(attention, schedule, normalizer, kv_heads);
}

struct Request {
  std::vector<int64_t> prompt;
  std::string budget;
};

// Greedy decode of every request for `steps` steps, batched and alone; the worst logit error.
double worst_batched_vs_alone(model::Gpt net, const std::vector<Request>& requests, int64_t steps) {
  const int64_t capacity = 100;
  BatchSession batch(net, static_cast<int64_t>(requests.size()), capacity);
  std::vector<Session> alone;
  std::vector<int64_t> next;
  double worst = 0;
  for (const auto& r : requests) {
    const auto rule = parse_budget_rule(r.budget);
    alone.emplace_back(net, capacity, rule);
    const auto want = alone.back().prefill(r.prompt);
    const auto got = batch.add(r.prompt, rule);
    worst = std::max(worst, relative_error(got, want));
    next.push_back(got[-1].argmax().item<int64_t>());
  }
  for (int64_t s = 0; s < steps; ++s) {
    const auto logits = batch.step(next);
    for (size_t i = 0; i < requests.size(); ++i) {
      const auto want = alone[i].step(next[i]);
      worst = std::max(worst, relative_error(logits[static_cast<int64_t>(i)], want));
      EXPECT_EQ(logits[static_cast<int64_t>(i)].argmax().item<int64_t>(),
                want.argmax().item<int64_t>())
          << "request " << i << ", step " << s;
      next[i] = want.argmax().item<int64_t>();
    }
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(batch.length(static_cast<int64_t>(i)), alone[i].length());
  }
  return worst;
}

TEST(BatchSession, EachRequestEqualsRunningItAlone) {
  const std::vector<Request> requests{{random_tokens(5, 1), "full"},
                                      {random_tokens(37, 2), "rungs=log2(n)"},
                                      {random_tokens(1, 3), "mass=0.7"},
                                      {random_tokens(12, 4), "window=3,rungs=1"}};
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
       make_model(AttentionFamily::fibonacci, AlphaSchedule::stagger, Normalizer::softmax, 1)},
      {"fibonacci entmax",
       make_model(AttentionFamily::fibonacci, AlphaSchedule::stagger, Normalizer::entmax)},
  };
  for (const auto& c : cases) {
    const double error = worst_batched_vs_alone(c.net, requests, 45);  // past reach 40
    EXPECT_LT(error, 1e-5) << c.name;
    RecordProperty(c.name, std::to_string(error));
  }
}

TEST(BatchSession, RequestsJoinBetweenSteps) {
  auto net = make_model(AttentionFamily::fibonacci);
  BatchSession batch(net, 2, 60);
  Session a(net, 60), b(net, 60);
  const auto pa = random_tokens(9, 5), pb = random_tokens(20, 6);
  batch.add(pa);
  a.prefill(pa);
  for (int64_t t = 0; t < 10; ++t) batch.step({t + 1}), a.step(t + 1);
  batch.add(pb);
  b.prefill(pb);
  for (int64_t t = 0; t < 10; ++t) {
    const auto logits = batch.step({t + 7, t + 9});
    EXPECT_LT(relative_error(logits[0], a.step(t + 7)), 1e-5);
    EXPECT_LT(relative_error(logits[1], b.step(t + 9)), 1e-5);
  }
  EXPECT_EQ(batch.length(0), 29);
  EXPECT_EQ(batch.length(1), 30);
}

TEST(BatchSession, BadRequestsAreClearErrors) {
  auto net = make_model(AttentionFamily::fibonacci);
  BatchSession batch(net, 1, 8);
  expect_error([&] { batch.step({}); }, "step with no requests");
  expect_error([&] { batch.add({}); }, "at least one token");
  expect_error([&] { batch.add(random_tokens(9, 1)); }, "exceeds the capacity 8");
  batch.add(random_tokens(7, 1));
  expect_error([&] { batch.add({1}); }, "is full (1 requests)");
  expect_error([&] { batch.step({1, 2}); }, "step got 2 tokens for 1 requests");
  batch.step({1});
  expect_error([&] { batch.step({1}); }, "one more exceeds its capacity 8");
  expect_error([&] { BatchSession(net, 0, 8); }, "max_requests must be >= 1");

  // The chunk family keeps its unfinished chunk per cache, not per request: refused.
  auto c = model::preset("micro");
  c.attention = AttentionFamily::chunk;
  c.window = 5;
  c.chunk_size = 4;
  c.chunk_top_k = 2;
  model::Gpt chunk(c);
  BatchSession chunk_batch(chunk, 2, 16);
  chunk_batch.add(random_tokens(6, 1));
  chunk_batch.add(random_tokens(9, 2));
  expect_error([&] { chunk_batch.step({1, 2}); }, "not supported for the chunk family");
}

// On a GPU (float32, no autocast): the same comparison with the model on the GPU, attention
// through the CUDA decode kernel with each request's length and budget (the kernel reads the
// lengths from the device). Bound 1e-4 relative to the largest logit, as SessionCuda's: the
// batched projections and MLP sum in other orders than one request's on the GPU; an indexing or
// budget mistake is O(1). Budgets the GPU op does not take (mass) and normalisers it does not
// (entmax) are clear errors, not a full forward that would read every request as the longest.
TEST(BatchSessionCuda, EachRequestEqualsRunningItAloneOnTheGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const std::vector<Request> requests{{random_tokens(5, 1), "full"},
                                      {random_tokens(37, 2), "rungs=log2(n)"},
                                      {random_tokens(1, 3), "full"},
                                      {random_tokens(12, 4), "window=3,rungs=1"}};
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
       make_model(AttentionFamily::fibonacci, AlphaSchedule::stagger, Normalizer::softmax, 1)},
  };
  for (auto c : cases) {
    c.net->to(torch::kCUDA);
    const double error = worst_batched_vs_alone(c.net, requests, 45);  // past reach 40
    EXPECT_LT(error, 1e-4) << c.name;
    RecordProperty(c.name, std::to_string(error));
  }

  auto entmax = make_model(AttentionFamily::fibonacci, AlphaSchedule::stagger, Normalizer::entmax);
  entmax->to(torch::kCUDA);
  BatchSession entmax_batch(entmax, 2, 40);
  entmax_batch.add(random_tokens(6, 1));
  entmax_batch.add(random_tokens(9, 2));
  expect_error([&] { entmax_batch.step({1, 2}); }, "needs the GPU decode op");
  auto fibonacci = make_model(AttentionFamily::fibonacci);
  fibonacci->to(torch::kCUDA);
  BatchSession mass_batch(fibonacci, 1, 40);
  expect_error([&] { mass_batch.add(random_tokens(6, 1), parse_budget_rule("mass=0.7")); },
               "runs on the CPU decode kernel only");
}

}  // namespace
}  // namespace reach::infer
