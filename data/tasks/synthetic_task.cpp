#include "data/tasks/synthetic_task.hpp"

#include <algorithm>
#include <set>
#include <stdexcept>

namespace reach::data::tasks {
namespace {

void check_length(const SyntheticTask& task, int64_t length) {
  if (length < task.min_length()) {
    throw std::invalid_argument(task.name() + ": length " + std::to_string(length) +
                                " is shorter than the task's minimum " +
                                std::to_string(task.min_length()));
  }
}

void require_positive(int64_t value, const std::string& what) {
  if (value < 1) {
    throw std::invalid_argument(what + " must be >= 1, got " + std::to_string(value));
  }
}

// Sorted distinct positions in [0, slots) for `count` items, uniformly at random.
std::vector<int64_t> spread(int64_t slots, int64_t count, std::mt19937_64& rng) {
  std::vector<int64_t> all(static_cast<size_t>(slots));
  for (int64_t i = 0; i < slots; ++i) all[static_cast<size_t>(i)] = i;
  std::vector<int64_t> chosen;
  std::sample(all.begin(), all.end(), std::back_inserter(chosen), count, rng);
  return chosen;
}

// Makes targets[p] = tokens[p+1] over [begin, end) and records the answer span.
void mark_answer(TaskExample& ex, int64_t begin, int64_t end) {
  for (int64_t p = begin; p < end; ++p) {
    ex.targets[static_cast<size_t>(p)] = ex.tokens[static_cast<size_t>(p + 1)];
  }
  ex.answers.emplace_back(begin, end);
}

// Token ids: 0 filler, 1 query marker, then keys, then values.
class AssociativeRecall final : public SyntheticTask {
 public:
  explicit AssociativeRecall(AssociativeRecallSpec spec) : spec_(spec) {
    require_positive(spec.num_keys, "associative_recall: num_keys");
    require_positive(spec.num_values, "associative_recall: num_values");
    require_positive(spec.pairs, "associative_recall: pairs");
    require_positive(spec.queries, "associative_recall: queries");
    require_positive(spec.tokens_per_item, "associative_recall: tokens_per_item");
    if (spec.queries > spec.pairs) {
      throw std::invalid_argument("associative_recall: queries (" + std::to_string(spec.queries) +
                                  ") must be <= pairs (" + std::to_string(spec.pairs) + ")");
    }
    double distinct = 1;
    for (int i = 0; i < spec.tokens_per_item; ++i) distinct *= spec.num_keys;
    if (distinct < spec.pairs) {
      throw std::invalid_argument("associative_recall: too few distinct keys for " +
                                  std::to_string(spec.pairs) + " pairs");
    }
  }
  std::string name() const override { return "associative_recall"; }
  int32_t vocab_size() const override { return 2 + spec_.num_keys + spec_.num_values; }
  int64_t min_length() const override {
    return int64_t{2} * spec_.tokens_per_item * (spec_.pairs + spec_.queries) + 1;
  }

  TaskExample sample(int64_t length, std::mt19937_64& rng) const override {
    check_length(*this, length);
    const int64_t t = spec_.tokens_per_item;
    std::uniform_int_distribution<int32_t> key_token(0, spec_.num_keys - 1);
    std::uniform_int_distribution<int32_t> value_token(0, spec_.num_values - 1);
    std::set<std::vector<int32_t>> used;
    std::vector<std::vector<int32_t>> keys, values;
    while (static_cast<int32_t>(keys.size()) < spec_.pairs) {
      std::vector<int32_t> key(static_cast<size_t>(t)), value(static_cast<size_t>(t));
      for (auto& k : key) k = 2 + key_token(rng);
      for (auto& v : value) v = 2 + spec_.num_keys + value_token(rng);
      if (used.insert(key).second) {
        keys.push_back(key);
        values.push_back(value);
      }
    }
    TaskExample ex;
    ex.tokens.assign(static_cast<size_t>(length), 0);
    ex.targets.assign(static_cast<size_t>(length), kIgnore);
    const int64_t query_part = 1 + 2 * t * spec_.queries;
    const int64_t context = length - query_part;
    // Bindings at random places in the context (each a block of 2t tokens), filler between.
    const int64_t free_slots = context - 2 * t * spec_.pairs;
    auto starts = spread(free_slots + spec_.pairs, spec_.pairs, rng);
    for (int32_t i = 0; i < spec_.pairs; ++i) {
      const int64_t pos = starts[static_cast<size_t>(i)] + int64_t{2 * t - 1} * i;
      std::copy(keys[i].begin(), keys[i].end(), ex.tokens.begin() + pos);
      std::copy(values[i].begin(), values[i].end(), ex.tokens.begin() + pos + t);
    }
    int64_t pos = context;
    ex.tokens[static_cast<size_t>(pos++)] = 1;
    std::vector<int32_t> order(static_cast<size_t>(spec_.pairs));
    for (int32_t i = 0; i < spec_.pairs; ++i) order[static_cast<size_t>(i)] = i;
    std::shuffle(order.begin(), order.end(), rng);
    for (int32_t qi = 0; qi < spec_.queries; ++qi) {
      const auto& key = keys[static_cast<size_t>(order[static_cast<size_t>(qi)])];
      const auto& value = values[static_cast<size_t>(order[static_cast<size_t>(qi)])];
      std::copy(key.begin(), key.end(), ex.tokens.begin() + pos);
      std::copy(value.begin(), value.end(), ex.tokens.begin() + pos + t);
      // Predict the value's tokens: from the last key token to the second-to-last value token.
      mark_answer(ex, pos + t - 1, pos + 2 * t - 1);
      pos += 2 * t;
    }
    return ex;
  }

 private:
  AssociativeRecallSpec spec_;
};

// Token ids: 0 filler, 1 query marker, 2.. numbers, then the other filler tokens (if any).
class MaxRetrieval final : public SyntheticTask {
 public:
  explicit MaxRetrieval(MaxRetrievalSpec spec) : spec_(spec) {
    require_positive(spec.num_values, "max_retrieval: num_values");
    require_positive(spec.items, "max_retrieval: items");
    require_positive(spec.filler_tokens, "max_retrieval: filler_tokens");
  }
  std::string name() const override { return "max_retrieval"; }
  int32_t vocab_size() const override { return 1 + spec_.num_values + spec_.filler_tokens; }
  int64_t min_length() const override { return spec_.items + 2; }

  TaskExample sample(int64_t length, std::mt19937_64& rng) const override {
    check_length(*this, length);
    TaskExample ex;
    ex.tokens.assign(static_cast<size_t>(length), 0);
    ex.targets.assign(static_cast<size_t>(length), kIgnore);
    if (spec_.filler_tokens > 1) {
      // Diverse filler: distinct distractor keys, so no single key can be pushed down once.
      std::uniform_int_distribution<int32_t> filler(0, spec_.filler_tokens - 1);
      for (auto& t : ex.tokens) {
        const int32_t f = filler(rng);
        t = f == 0 ? 0 : 1 + spec_.num_values + f;
      }
    }
    std::uniform_int_distribution<int32_t> number(0, spec_.num_values - 1);
    const int64_t context = length - 2;
    int32_t best = -1;
    for (int64_t pos : spread(context, spec_.items, rng)) {
      const int32_t value = number(rng);
      best = std::max(best, value);
      ex.tokens[static_cast<size_t>(pos)] = 2 + value;
    }
    ex.tokens[static_cast<size_t>(length - 2)] = 1;
    ex.tokens[static_cast<size_t>(length - 1)] = 2 + best;
    mark_answer(ex, length - 2, length - 1);
    return ex;
  }

 private:
  MaxRetrievalSpec spec_;
};

// Token ids: 0..9 digits, 10 passkey marker, 11 query marker, 12.. filler words.
class Passkey final : public SyntheticTask {
 public:
  static constexpr int32_t kFillerWords = 12;
  explicit Passkey(PasskeySpec spec) : spec_(spec) {
    require_positive(spec.digits, "passkey: digits");
    if (spec.depth > 1.0) {
      throw std::invalid_argument("passkey: depth must be in [0, 1] (or < 0 for random)");
    }
  }
  std::string name() const override { return "passkey"; }
  int32_t vocab_size() const override { return 12 + kFillerWords; }
  int64_t min_length() const override { return 2 * (spec_.digits + 1) + 1; }

  TaskExample sample(int64_t length, std::mt19937_64& rng) const override {
    check_length(*this, length);
    TaskExample ex;
    ex.tokens.resize(static_cast<size_t>(length));
    ex.targets.assign(static_cast<size_t>(length), kIgnore);
    // Repetitive filler: the same sentence of filler words over and over.
    for (int64_t p = 0; p < length; ++p) {
      ex.tokens[static_cast<size_t>(p)] = 12 + static_cast<int32_t>(p % kFillerWords);
    }
    std::uniform_int_distribution<int32_t> digit(0, 9);
    std::vector<int32_t> key(static_cast<size_t>(spec_.digits));
    for (auto& d : key) d = digit(rng);
    const int64_t block = spec_.digits + 1;
    const int64_t filler = length - 2 * block;  // positions available before the query
    double depth = spec_.depth;
    if (depth < 0) depth = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
    const auto at = static_cast<int64_t>(depth * static_cast<double>(filler));
    ex.tokens[static_cast<size_t>(at)] = 10;
    std::copy(key.begin(), key.end(), ex.tokens.begin() + at + 1);
    const int64_t query = length - block;
    ex.tokens[static_cast<size_t>(query)] = 11;
    std::copy(key.begin(), key.end(), ex.tokens.begin() + query + 1);
    mark_answer(ex, query, length - 1);
    return ex;
  }

 private:
  PasskeySpec spec_;
};

}  // namespace

std::unique_ptr<SyntheticTask> make_associative_recall(const AssociativeRecallSpec& spec) {
  return std::make_unique<AssociativeRecall>(spec);
}
std::unique_ptr<SyntheticTask> make_max_retrieval(const MaxRetrievalSpec& spec) {
  return std::make_unique<MaxRetrieval>(spec);
}
std::unique_ptr<SyntheticTask> make_passkey(const PasskeySpec& spec) {
  return std::make_unique<Passkey>(spec);
}

std::unique_ptr<SyntheticTask> make_task(const std::string& name) {
  if (name == "associative_recall" || name == "mqar") return make_associative_recall({});
  if (name == "max_retrieval") return make_max_retrieval({});
  if (name == "passkey") return make_passkey({});
  throw std::invalid_argument("unknown task '" + name +
                              "' (expected associative_recall, max_retrieval or passkey)");
}

double answer_accuracy(const TaskExample& example, const std::vector<int32_t>& predictions) {
  if (predictions.size() != example.targets.size()) {
    throw std::invalid_argument("answer_accuracy: " + std::to_string(predictions.size()) +
                                " predictions for " + std::to_string(example.targets.size()) +
                                " positions");
  }
  if (example.answers.empty()) return 0.0;
  int64_t right = 0;
  for (auto [begin, end] : example.answers) {
    bool all = true;
    for (int64_t p = begin; p < end; ++p) {
      all = all && predictions[static_cast<size_t>(p)] == example.targets[static_cast<size_t>(p)];
    }
    right += all ? 1 : 0;
  }
  return static_cast<double>(right) / static_cast<double>(example.answers.size());
}

}  // namespace reach::data::tasks
