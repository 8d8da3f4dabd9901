// Whole sequences under a budget (what reach eval / tasks eval / budget-study score): the
// full rule is the plain forward to the bit; a mass budget in a full forward equals
// prefill + token-by-token decode under it (both run each query through the decode kernel:
// float64 sums, so <= 1e-5 relative to the largest logit, the inference bar); the keys
// counted equal the key set's size where it is known in closed form.
#include "infer/budgeted_forward.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "infer/session.hpp"

namespace reach::infer {
namespace {

model::Gpt make_model(model::AttentionFamily attention, int64_t window = 8) {
  auto c = model::preset("micro");
  c.attention = attention;
  c.window = window;
  c.reach = 40;
  torch::manual_seed(11);
  model::Gpt net(c);
  net->eval();
  return net;
}

torch::Tensor random_tokens(int64_t batch, int64_t n) {
  torch::manual_seed(3);
  return torch::randint(0, 256, {batch, n}, torch::kLong);
}

double relative_error(const torch::Tensor& got, const torch::Tensor& want) {
  return (got - want).abs().max().item<double>() / want.abs().max().item<double>();
}

TEST(BudgetedForward, FullRuleIsThePlainForwardExactly) {
  torch::NoGradGuard no_grad;
  for (auto family : {model::AttentionFamily::dense, model::AttentionFamily::fibonacci}) {
    auto net = make_model(family);
    const auto tokens = random_tokens(2, 70);
    EXPECT_TRUE(torch::equal(budgeted_logits(net, tokens, parse_budget_rule("full")),
                             net->forward(tokens)));
  }
}

TEST(BudgetedForward, SmallerBudgetsChangeTheLogits) {
  torch::NoGradGuard no_grad;
  auto net = make_model(model::AttentionFamily::fibonacci);
  const auto tokens = random_tokens(1, 90);
  const auto plain = net->forward(tokens);
  for (const std::string rule : {"rungs=1", "window=2", "mass=0.5", "rungs=0.1*log2(n)"}) {
    EXPECT_GT(relative_error(budgeted_logits(net, tokens, parse_budget_rule(rule)), plain), 1e-4)
        << rule;
  }
  // mass = 1 keeps every key: the decode kernel's rows equal the fused forward.
  EXPECT_LT(relative_error(budgeted_logits(net, tokens, parse_budget_rule("mass=1")), plain), 1e-5);
}

TEST(BudgetedForward, MassBudgetEqualsDecodeUnderIt) {
  torch::NoGradGuard no_grad;
  for (auto family : {model::AttentionFamily::dense, model::AttentionFamily::fibonacci}) {
    auto net = make_model(family);
    const auto tokens = random_tokens(1, 60);
    const auto rule = parse_budget_rule("mass=0.6");
    const auto want = budgeted_logits(net, tokens, rule)[0];
    Session session(net, 60, rule);
    std::vector<int64_t> ids(tokens.data_ptr<int64_t>(), tokens.data_ptr<int64_t>() + 60);
    std::vector<torch::Tensor> rows{session.prefill({ids.begin(), ids.begin() + 7})};
    for (size_t i = 7; i < ids.size(); ++i) rows.push_back(session.step(ids[i]).unsqueeze(0));
    EXPECT_LT(relative_error(torch::cat(rows, 0), want), 1e-5) << model::to_string(family);
  }
}

TEST(BudgetedForward, MeasuresTheKeysRead) {
  const int64_t n = 50;
  {
    // Window W: position t reads min(W, t + 1) keys.
    auto net = make_model(model::AttentionFamily::window, 8);
    const auto used = measure_budget(net, random_tokens(1, n)[0], parse_budget_rule("window=5"));
    double want = 0;
    for (int64_t t = 0; t < n; ++t) want += static_cast<double>(std::min<int64_t>(5, t + 1));
    EXPECT_TRUE(used.measured);
    EXPECT_DOUBLE_EQ(used.keys_per_query, want / n);
    EXPECT_EQ(used.resolved.window, 5);
  }
  {
    // Dense: t + 1 keys, mean (n + 1) / 2; the rule of n resolves at n.
    auto net = make_model(model::AttentionFamily::dense);
    const auto used =
        measure_budget(net, random_tokens(1, n)[0], parse_budget_rule("rungs=log2(n)"));
    EXPECT_DOUBLE_EQ(used.keys_per_query, (n + 1) / 2.0);
    EXPECT_EQ(used.resolved.rungs, 6);  // ceil(log2(50))
  }
}

}  // namespace
}  // namespace reach::infer
