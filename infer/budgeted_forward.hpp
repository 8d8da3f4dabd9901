// Whole sequences scored under a request's budget (reach eval, reach tasks eval, reach
// budget-study): the same weights, the rule resolved at the sequence's length n (as
// `reach generate` resolves it for a prompt), and the budget actually used (the keys a
// query read) measured through the decode kernel.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "infer/budget_rule.hpp"
#include "model/attention/forward_context.hpp"
#include "model/gpt.hpp"

namespace reach::infer {

// What a budget was at one length, and what it cost.
struct BudgetUsed {
  std::string rule = "full";
  int64_t length = 0;
  ResolvedBudget resolved;    // the rule at n = length
  double keys_per_query = 0;  // mean keys whose value a query read, per head and layer
  bool measured = false;      // false: not measured (the model is not on the CPU)
};

model::attention::AttentionBudget attention_budget(const ResolvedBudget& budget);

// Logits [B, T, V] of tokens [B, T] (on the model's device) at rule.at(T). With usage set,
// every query runs through the decode kernel, which adds the keys it read (CPU only).
// Throws std::invalid_argument naming the problem (e.g. a mass budget on a GPU).
torch::Tensor budgeted_logits(model::Gpt& model, const torch::Tensor& tokens,
                              const BudgetRule& rule,
                              model::attention::BudgetUsage* usage = nullptr);

// The budget used at tokens' length: the rule there and, on the CPU, the mean keys read
// per query (one counted forward of tokens [1, n]).
BudgetUsed measure_budget(model::Gpt& model, const torch::Tensor& tokens, const BudgetRule& rule);

// Keys per query from counts gathered over a run (0 when nothing was counted).
double keys_per_query(const model::attention::BudgetUsage& usage);

}  // namespace reach::infer
