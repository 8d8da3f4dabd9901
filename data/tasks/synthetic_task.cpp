#include "data/tasks/synthetic_task.hpp"

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>

#include "data/tasks/needle_task.hpp"
#include "data/tasks/variable_tracking_task.hpp"

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

// Token ids: 0 space, 1 key-value separator, 2 query separator (the generator's own ids),
// 3 .. 3 + alphabet - 1 the symbols, then bos, sep (end of the source) and eos.
class AssociativeRecall final : public SyntheticTask {
 public:
  static constexpr int32_t kSpace = 0, kKvSep = 1, kQuerySep = 2, kFirstSymbol = 3;

  explicit AssociativeRecall(AssociativeRecallSpec spec) : spec_(spec) {
    require_positive(spec.alphabet, "associative_recall: alphabet");
    require_positive(spec.vocabulary, "associative_recall: vocabulary");
    require_positive(spec.tokens_per_item, "associative_recall: tokens_per_item");
    require_positive(spec.queries, "associative_recall: queries");
    if (!(spec.kv_fraction > 0.0 && spec.kv_fraction <= 1.0)) {
      throw std::invalid_argument("associative_recall: kv_fraction must be in (0, 1], got " +
                                  std::to_string(spec.kv_fraction));
    }
    double strings = 1;
    for (int32_t i = 0; i < spec.tokens_per_item; ++i) strings *= spec.alphabet;
    if (strings < spec.vocabulary) {
      throw std::invalid_argument(
          "associative_recall: vocabulary (" + std::to_string(spec.vocabulary) + ") exceeds the " +
          std::to_string(static_cast<int64_t>(strings)) +
          " strings of tokens_per_item = " + std::to_string(spec.tokens_per_item) +
          " symbols over an alphabet of " + std::to_string(spec.alphabet));
    }
    // The key and value sets: fixed for the task (not drawn from the example stream).
    std::mt19937_64 rng(0x6b657973);  // "keys"
    keys_ = distinct_strings(rng);
    values_ = distinct_strings(rng);
    min_length_ = 1;
    while (pairs(min_length_) < spec.queries) ++min_length_;
  }
  std::string name() const override { return "associative_recall"; }
  int32_t vocab_size() const override { return kFirstSymbol + spec_.alphabet + 3; }
  int64_t min_length() const override { return min_length_; }
  int64_t sequence_length(int64_t length) const override {
    check_length(*this, length);
    const int64_t n = pairs(length);
    return 1 + n * (length / n) + 2 * int64_t{spec_.queries} * (1 + spec_.tokens_per_item) + 2;
  }

  TaskExample sample(int64_t length, std::mt19937_64& rng) const override {
    check_length(*this, length);
    const int64_t t = spec_.tokens_per_item, n = pairs(length), row = length / n;
    const int32_t bos = kFirstSymbol + spec_.alphabet, sep = bos + 1, eos = bos + 2;
    // The example's keys and values: distinct draws, in random order.
    const auto key_ids = draw_distinct(static_cast<int64_t>(keys_.size()), n, rng);
    const auto value_ids = draw_distinct(static_cast<int64_t>(values_.size()), n, rng);
    TaskExample ex;
    ex.tokens.reserve(static_cast<size_t>(sequence_length(length)));
    ex.tokens.push_back(bos);
    // A row is the generator's 2 (row + 1) slots with the binding in the middle, of which
    // row - (2t + 2) spaces are kept at random: the spaces kept before it are those of the
    // slots [0, row + 1 - t) among the kept ones.
    const int64_t unit = 2 * t + 2, slots = 2 * (row + 1) - unit, before_slots = row + 1 - t;
    for (int64_t i = 0; i < n; ++i) {
      const auto kept = draw_distinct(slots, row - unit, rng);
      const auto before =
          std::count_if(kept.begin(), kept.end(), [&](int64_t s) { return s < before_slots; });
      ex.tokens.insert(ex.tokens.end(), static_cast<size_t>(before), kSpace);
      const auto& key = keys_[static_cast<size_t>(key_ids[static_cast<size_t>(i)])];
      const auto& value = values_[static_cast<size_t>(value_ids[static_cast<size_t>(i)])];
      ex.tokens.insert(ex.tokens.end(), key.begin(), key.end());
      ex.tokens.push_back(kKvSep);
      ex.tokens.insert(ex.tokens.end(), value.begin(), value.end());
      ex.tokens.insert(ex.tokens.end(), static_cast<size_t>(1 + (row - unit) - before), kSpace);
    }
    std::uniform_int_distribution<int64_t> which(0, n - 1);
    std::vector<int64_t> asked(static_cast<size_t>(spec_.queries));
    for (auto& q : asked) q = which(rng);
    for (int64_t q : asked) {
      const auto& key = keys_[static_cast<size_t>(key_ids[static_cast<size_t>(q)])];
      ex.tokens.push_back(kQuerySep);
      ex.tokens.insert(ex.tokens.end(), key.begin(), key.end());
    }
    const auto source_end = static_cast<int64_t>(ex.tokens.size());
    ex.tokens.push_back(sep);
    for (int64_t q : asked) {
      const auto& value = values_[static_cast<size_t>(value_ids[static_cast<size_t>(q)])];
      ex.tokens.push_back(kQuerySep);
      ex.tokens.insert(ex.tokens.end(), value.begin(), value.end());
    }
    ex.tokens.push_back(eos);
    ex.targets.assign(ex.tokens.size(), kIgnore);
    // The target is everything after sep: predicted from sep up to the token before eos.
    mark_answer(ex, source_end, static_cast<int64_t>(ex.tokens.size()) - 1);
    return ex;
  }

 private:
  // Bindings in a context of `length` tokens (the generator's num_kv).
  int64_t pairs(int64_t length) const {
    const auto unit = static_cast<double>(2 * spec_.tokens_per_item + 2);
    const auto n =
        static_cast<int64_t>(std::floor(static_cast<double>(length) * spec_.kv_fraction / unit));
    return std::min<int64_t>(n, spec_.vocabulary);
  }

  // `count` distinct values of [0, range) in random order (a partial Fisher-Yates shuffle).
  static std::vector<int64_t> draw_distinct(int64_t range, int64_t count, std::mt19937_64& rng) {
    std::vector<int64_t> all(static_cast<size_t>(range));
    for (int64_t i = 0; i < range; ++i) all[static_cast<size_t>(i)] = i;
    for (int64_t i = 0; i < count; ++i) {
      std::uniform_int_distribution<int64_t> pick(i, range - 1);
      std::swap(all[static_cast<size_t>(i)], all[static_cast<size_t>(pick(rng))]);
    }
    all.resize(static_cast<size_t>(count));
    return all;
  }

  std::vector<std::vector<int32_t>> distinct_strings(std::mt19937_64& rng) const {
    std::uniform_int_distribution<int32_t> symbol(0, spec_.alphabet - 1);
    std::set<std::vector<int32_t>> seen;
    std::vector<std::vector<int32_t>> out;
    while (static_cast<int32_t>(out.size()) < spec_.vocabulary) {
      std::vector<int32_t> s(static_cast<size_t>(spec_.tokens_per_item));
      for (auto& c : s) c = kFirstSymbol + symbol(rng);
      if (seen.insert(s).second) out.push_back(std::move(s));
    }
    return out;
  }

  AssociativeRecallSpec spec_;
  std::vector<std::vector<int32_t>> keys_, values_;
  int64_t min_length_ = 1;
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
  if (name == "needle") return make_needle({});
  if (name == "variable_tracking") return make_variable_tracking({});
  throw std::invalid_argument("unknown task '" + name +
                              "' (expected associative_recall, max_retrieval, passkey, needle or "
                              "variable_tracking)");
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
