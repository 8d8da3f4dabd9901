// Perplexity versus length under a per-request attention budget (`reach eval --budget`,
// `reach budget-study`): each length is scored with the rule resolved at n = that length,
// over the same weights, and the budget actually used is measured (keys read per query).
#pragma once

#include <cstdint>
#include <vector>

#include "cli/eval_device.hpp"
#include "eval/perplexity.hpp"
#include "infer/budgeted_forward.hpp"
#include "model/gpt.hpp"

namespace reach::cli {

struct BudgetedLengths {
  std::vector<eval::LengthResult> results;
  std::vector<infer::BudgetUsed> budgets;  // one per result
};

// A mass budget is counted over every window it scores; any other is the fused forward,
// its keys read counted on the first window (on the CPU; on a GPU they are not measured).
BudgetedLengths evaluate_budgeted_lengths(model::Gpt& model, const EvalDevice& where,
                                          const std::vector<std::vector<int64_t>>& documents,
                                          const std::vector<int64_t>& lengths, int64_t max_tokens,
                                          const std::vector<int64_t>& token_bytes,
                                          const infer::BudgetRule& rule);

}  // namespace reach::cli
