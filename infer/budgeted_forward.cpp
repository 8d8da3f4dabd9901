#include "infer/budgeted_forward.hpp"

#include <stdexcept>

namespace reach::infer {

model::attention::AttentionBudget attention_budget(const ResolvedBudget& budget) {
  model::attention::AttentionBudget out;
  out.window = budget.window;
  out.rungs = budget.rungs;
  out.mass = budget.mass;
  out.chunks = budget.chunks;
  out.chunk_mass = budget.chunk_mass;
  if (budget.chunk_rule) {
    using Kind = LengthRule::Kind;
    model::attention::ChunkCountRule rule;
    rule.coefficient = budget.chunk_rule->coefficient;
    switch (budget.chunk_rule->kind) {
      case Kind::linear:
        rule.kind = pattern::ChunkBudgetRule::fraction;
        break;
      case Kind::sqrt:
        rule.kind = pattern::ChunkBudgetRule::sqrt;
        break;
      case Kind::log2:
        rule.kind = pattern::ChunkBudgetRule::log2;
        break;
      case Kind::constant:
        throw std::logic_error("a constant chunk count is resolved, not a rule of c");
    }
    out.chunk_rule = rule;
  }
  return out;
}

torch::Tensor budgeted_logits(model::Gpt& model, const torch::Tensor& tokens,
                              const BudgetRule& rule, model::attention::BudgetUsage* usage) {
  if (tokens.dim() != 2) throw std::invalid_argument("budgeted logits: tokens must be [B, T]");
  model::attention::ForwardContext context;
  context.budget = attention_budget(rule.at(tokens.size(1)));
  context.usage = usage;
  return model->forward_with(context, tokens);
}

double keys_per_query(const model::attention::BudgetUsage& usage) {
  return usage.queries > 0 ? static_cast<double>(usage.keys) / static_cast<double>(usage.queries)
                           : 0.0;
}

BudgetUsed measure_budget(model::Gpt& model, const torch::Tensor& tokens, const BudgetRule& rule) {
  BudgetUsed used;
  used.rule = rule.text;
  used.length = tokens.size(-1);
  used.resolved = rule.at(used.length);
  if (!model->parameters().front().device().is_cpu()) return used;
  torch::NoGradGuard no_grad;
  model::attention::BudgetUsage usage;
  budgeted_logits(model, tokens.view({1, -1}), rule, &usage);
  used.keys_per_query = keys_per_query(usage);
  used.measured = true;
  return used;
}

}  // namespace reach::infer
