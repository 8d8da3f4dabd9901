#include "cli/budget_eval.hpp"

#include "train/device.hpp"

namespace reach::cli {

BudgetedLengths evaluate_budgeted_lengths(model::Gpt& model, const EvalDevice& where,
                                          const std::vector<std::vector<int64_t>>& documents,
                                          const std::vector<int64_t>& lengths, int64_t max_tokens,
                                          const std::vector<int64_t>& token_bytes,
                                          const infer::BudgetRule& rule) {
  BudgetedLengths out;
  for (const int64_t length : lengths) {
    model::attention::BudgetUsage usage;
    auto* counted = rule.is_dynamic() ? &usage : nullptr;
    const auto results = eval::evaluate_lengths(
        [&](const torch::Tensor& x) {
          const train::Bf16Autocast autocast(where.bf16);
          return infer::budgeted_logits(model, x.to(where.device), rule, counted);
        },
        documents, {length}, max_tokens, 8192, token_bytes);
    out.results.push_back(results.front());
    if (rule.is_dynamic()) {
      infer::BudgetUsed used{rule.text, length, rule.at(length), infer::keys_per_query(usage),
                             true};
      out.budgets.push_back(used);
      continue;
    }
    // The first window evaluate_lengths scored: the first document of length + 1 tokens.
    for (const auto& doc : documents) {
      if (static_cast<int64_t>(doc.size()) < length + 1) continue;
      const auto tokens =
          torch::tensor(std::vector<int64_t>(doc.begin(), doc.begin() + length), torch::kLong)
              .to(where.device);
      out.budgets.push_back(infer::measure_budget(model, tokens, rule));
      break;
    }
  }
  return out;
}

}  // namespace reach::cli
