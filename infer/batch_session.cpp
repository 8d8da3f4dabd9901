#include "infer/batch_session.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "infer/budgeted_forward.hpp"

namespace reach::infer {

BatchSession::BatchSession(model::Gpt model, int64_t max_requests, int64_t capacity)
    : model_(std::move(model)),
      max_requests_(max_requests),
      capacity_(capacity),
      cache_(model_->config().layers) {
  if (max_requests < 1) throw std::invalid_argument("batch session: max_requests must be >= 1");
  if (capacity < 1) throw std::invalid_argument("batch session: capacity must be >= 1 token");
  model_->eval();
}

int64_t BatchSession::length(int64_t request) const {
  if (request < 0 || request >= requests()) {
    throw std::out_of_range("batch session has " + std::to_string(requests()) +
                            " requests, asked for " + std::to_string(request));
  }
  return cache_.layers() > 0 ? cache_.layer_lengths()[static_cast<size_t>(request)] : 0;
}

torch::Tensor BatchSession::add(const std::vector<int64_t>& prompt, BudgetRule budget) {
  const auto t = static_cast<int64_t>(prompt.size());
  if (t == 0) throw std::invalid_argument("batch session: a request needs at least one token");
  if (t > capacity_) {
    throw std::invalid_argument("batch session: a prompt of " + std::to_string(t) +
                                " tokens exceeds the capacity " + std::to_string(capacity_));
  }
  if (requests() == max_requests_) {
    throw std::invalid_argument("batch session is full (" + std::to_string(max_requests_) +
                                " requests)");
  }
  torch::NoGradGuard no_grad;
  // The request's own prefill, exactly as a Session runs it.
  model::attention::KvCache own(model_->config().layers);
  model::attention::ForwardContext context;
  context.cache = &own;
  context.budget = attention_budget(budget.at(t));
  const auto input =
      torch::tensor(prompt, torch::kLong).view({1, t}).to(model_->parameters().front().device());
  const auto logits = model_->forward_with(context, input)[0];
  for (int64_t l = 0; l < cache_.layers(); ++l) {
    const auto& layer = own.layer(l);
    cache_.layer(l).add_request(layer.keys, layer.values, max_requests_, capacity_);
  }
  budgets_.push_back(std::move(budget));
  graph_.reset();  // it holds the requests it was captured for
  return logits.to(torch::kCPU, torch::kFloat32);
}

torch::Tensor BatchSession::step(const std::vector<int64_t>& tokens) {
  const int64_t r = requests();
  if (static_cast<int64_t>(tokens.size()) != r) {
    throw std::invalid_argument("batch session: step got " + std::to_string(tokens.size()) +
                                " tokens for " + std::to_string(r) + " requests");
  }
  if (r == 0) throw std::invalid_argument("batch session: step with no requests");
  torch::NoGradGuard no_grad;
  model::attention::ForwardContext context;
  context.cache = &cache_;
  context.usage = &usage_;
  const auto lengths = cache_.layer_lengths();
  for (int64_t i = 0; i < r; ++i) {
    const int64_t n = lengths[static_cast<size_t>(i)];
    if (n + 1 > capacity_) {
      throw std::invalid_argument("batch session: request " + std::to_string(i) + " holds " +
                                  std::to_string(n) + " tokens; one more exceeds its capacity " +
                                  std::to_string(capacity_));
    }
    context.positions.push_back(n);
    context.budgets.push_back(attention_budget(budgets_[static_cast<size_t>(i)].at(n + 1)));
  }
  const bool trained_key_sets =
      std::all_of(context.budgets.begin(), context.budgets.end(), [](const auto& b) {
        return !b.rungs && !b.chunks && !b.chunk_rule && !b.chunk_mass && !b.window && !b.mass;
      });
  if (use_graph_ && trained_key_sets && DecodeGraph::problem(model_, cache_).empty()) {
    if (!graph_) graph_ = std::make_unique<DecodeGraph>(model_, cache_);
    const int64_t replays = graph_->replays();
    const auto logits = graph_->step(torch::tensor(tokens, torch::kLong));
    graph_steps_ += graph_->replays() - replays;
    return logits.to(torch::kCPU, torch::kFloat32);
  }
  graph_.reset();  // its device positions would be stale after an eager step
  const auto input =
      torch::tensor(tokens, torch::kLong).view({r, 1}).to(model_->parameters().front().device());
  return model_->forward_with(context, input).select(1, 0).to(torch::kCPU, torch::kFloat32);
}

void BatchSession::use_cuda_graph(bool on) {
  use_graph_ = on;
  if (!on) graph_.reset();
}

}  // namespace reach::infer
