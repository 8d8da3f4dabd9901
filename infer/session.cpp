#include "infer/session.hpp"

#include <stdexcept>
#include <string>

#include "infer/budgeted_forward.hpp"

namespace reach::infer {

Session::Session(model::Gpt model, int64_t capacity, BudgetRule budget)
    : model_(std::move(model)),
      capacity_(capacity),
      budget_(std::move(budget)),
      cache_(model_->config().layers) {
  if (capacity < 1) throw std::invalid_argument("session capacity must be >= 1 token");
  cache_.reserve(capacity);
  model_->eval();
}

torch::Tensor Session::forward(const std::vector<int64_t>& tokens) {
  const auto t = static_cast<int64_t>(tokens.size());
  if (length() + t > capacity_) {
    throw std::invalid_argument("request holds " + std::to_string(length()) + " tokens; " +
                                std::to_string(t) + " more exceed its capacity " +
                                std::to_string(capacity_));
  }
  torch::NoGradGuard no_grad;
  model::attention::ForwardContext context;
  context.position = length();
  context.cache = &cache_;
  context.budget = attention_budget(budget_.at(length() + t));
  // The budget used is counted over decode steps (a counted prefill would run the prompt's
  // rows through the decode kernel instead of the fused forward).
  if (length() > 0) context.usage = &usage_;
  // The model may be on a GPU; the logits come back to the CPU, where sampling runs.
  const auto input =
      torch::tensor(tokens, torch::kLong).view({1, t}).to(model_->parameters().front().device());
  return model_->forward_with(context, input)[0].to(torch::kCPU, torch::kFloat32);
}

torch::Tensor Session::prefill(const std::vector<int64_t>& tokens) {
  if (tokens.empty()) throw std::invalid_argument("prefill needs at least one token");
  if (length() != 0) throw std::logic_error("prefill on a session that already holds tokens");
  return forward(tokens);
}

torch::Tensor Session::step(int64_t token) {
  if (use_graph_ && !graph_ && graph_refused_.empty() && length() > 0) {
    graph_refused_ = !budget_.is_full() ? "the budget " + budget_.text + " is a host value per step"
                                        : DecodeGraph::model_problem(model_);
    if (graph_refused_.empty()) {
      // The graph's form: the cache as a batch of one request (irreversible, so only here).
      for (int64_t l = 0; l < cache_.layers(); ++l) cache_.layer(l).split_into_requests();
      graph_ = std::make_unique<DecodeGraph>(model_, cache_);
    }
  }
  if (!graph_) return forward({token})[0];
  if (length() + 1 > capacity_) {
    throw std::invalid_argument("request holds " + std::to_string(length()) +
                                " tokens; 1 more exceed its capacity " + std::to_string(capacity_));
  }
  return graph_->step(torch::tensor({token}, torch::kLong))[0].to(torch::kCPU, torch::kFloat32);
}

}  // namespace reach::infer
