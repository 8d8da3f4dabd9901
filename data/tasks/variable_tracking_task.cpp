#include "data/tasks/variable_tracking_task.hpp"

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>

#include "data/tasks/filler_text.hpp"

namespace reach::data::tasks {
namespace {

constexpr int32_t kBos = 256, kBegin = 257, kEnd = 258, kQuery = 259, kAnswer = 260, kEos = 261;
constexpr int64_t kNameLetters = 5;
constexpr int64_t kMinFiller = 64;  // filler bytes of an example of min_length
const std::string kVar = "VAR ";
const std::string kEquals = " = ";

class VariableTracking final : public SyntheticTask {
 public:
  explicit VariableTracking(VariableTrackingSpec spec) : spec_(std::move(spec)) {
    auto positive = [](int32_t v, const char* key) {
      if (v < 1) {
        throw std::invalid_argument(std::string("variable_tracking: ") + key +
                                    " must be >= 1, got " + std::to_string(v));
      }
    };
    positive(spec_.chains, "task.chains");
    positive(spec_.hops, "task.hops");
    positive(spec_.digits, "task.digits");
    if (spec_.digits < 10 && std::pow(10.0, spec_.digits) < spec_.chains) {
      throw std::invalid_argument(
          "variable_tracking: task.chains (" + std::to_string(spec_.chains) +
          ") exceeds the distinct values of " + std::to_string(spec_.digits) + " digits");
    }
    text_ = load_filler_text(spec_.corpus, "variable_tracking");
    require_filler("variable_tracking", spec_.corpus, *text_, kMinFiller,
                   "an example needs at least");
  }
  std::string name() const override { return "variable_tracking"; }
  int32_t vocab_size() const override { return kEos + 1; }
  int64_t min_length() const override { return fixed_tokens() + kMinFiller; }

  TaskExample sample(int64_t length, std::mt19937_64& rng) const override {
    if (length < min_length()) {
      throw std::invalid_argument("variable_tracking: length " + std::to_string(length) +
                                  " is shorter than the task's minimum " +
                                  std::to_string(min_length()));
    }
    const int64_t filler = length - fixed_tokens();
    require_filler("variable_tracking", spec_.corpus, *text_, filler,
                   "an example of length " + std::to_string(length) + " needs");
    const int32_t per_chain = spec_.hops + 1;
    // Names (distinct) per statement, values (distinct) per chain.
    std::uniform_int_distribution<int> letter('A', 'Z'), digit('0', '9');
    std::set<std::string> seen_names, seen_values;
    std::vector<std::vector<std::string>> names(static_cast<size_t>(spec_.chains));
    std::vector<std::string> values;
    for (auto& chain : names) {
      while (static_cast<int32_t>(chain.size()) < per_chain) {
        std::string name;
        for (int64_t i = 0; i < kNameLetters; ++i) name.push_back(static_cast<char>(letter(rng)));
        if (seen_names.insert(name).second) chain.push_back(std::move(name));
      }
      std::string value;
      do {
        value.clear();
        for (int32_t i = 0; i < spec_.digits; ++i) value.push_back(static_cast<char>(digit(rng)));
      } while (!seen_values.insert(value).second);
      values.push_back(std::move(value));
    }
    // A random interleaving of the chains, each in its own order.
    std::vector<int32_t> order;
    for (int32_t c = 0; c < spec_.chains; ++c) order.insert(order.end(), per_chain, c);
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<int32_t> span;
    span.reserve(static_cast<size_t>(filler));
    append_filler_span(*text_, filler, rng, span);
    const auto offsets = insertion_offsets(filler, static_cast<int64_t>(order.size()), rng);

    TaskExample ex;
    ex.tokens.reserve(static_cast<size_t>(length));
    ex.tokens.push_back(kBos);
    std::vector<int32_t> next(static_cast<size_t>(spec_.chains), 0);
    int64_t from = 0;
    for (size_t s = 0; s < order.size(); ++s) {
      const auto at = offsets[s];
      ex.tokens.insert(ex.tokens.end(), span.begin() + from, span.begin() + at);
      from = at;
      const auto c = static_cast<size_t>(order[s]);
      const auto i = static_cast<size_t>(next[c]++);
      ex.tokens.push_back(kBegin);
      append_bytes(kVar + names[c][i] + kEquals + (i == 0 ? values[c] : names[c][i - 1]),
                   ex.tokens);
      ex.tokens.push_back(kEnd);
    }
    ex.tokens.insert(ex.tokens.end(), span.begin() + from, span.end());
    std::vector<int32_t> asked(static_cast<size_t>(spec_.chains));
    for (int32_t c = 0; c < spec_.chains; ++c) asked[static_cast<size_t>(c)] = c;
    std::shuffle(asked.begin(), asked.end(), rng);
    std::vector<int64_t> answer_at;
    for (int32_t c : asked) {
      ex.tokens.push_back(kQuery);
      append_bytes(names[static_cast<size_t>(c)].back(), ex.tokens);
      answer_at.push_back(static_cast<int64_t>(ex.tokens.size()));
      ex.tokens.push_back(kAnswer);
      append_bytes(values[static_cast<size_t>(c)], ex.tokens);
    }
    ex.tokens.push_back(kEos);
    ex.targets.assign(ex.tokens.size(), kIgnore);
    for (int64_t at : answer_at) {
      for (int64_t p = at; p < at + spec_.digits; ++p) {
        ex.targets[static_cast<size_t>(p)] = ex.tokens[static_cast<size_t>(p + 1)];
      }
      ex.answers.emplace_back(at, at + spec_.digits);
    }
    return ex;
  }

 private:
  int64_t statement_tokens(int64_t rhs) const {
    return 2 + static_cast<int64_t>(kVar.size() + kEquals.size()) + kNameLetters + rhs;
  }
  int64_t fixed_tokens() const {
    const int64_t chain =
        statement_tokens(spec_.digits) + spec_.hops * statement_tokens(kNameLetters);
    return 2 + spec_.chains * (chain + 2 + kNameLetters + spec_.digits);
  }

  VariableTrackingSpec spec_;
  std::shared_ptr<const std::string> text_;
};

}  // namespace

std::unique_ptr<SyntheticTask> make_variable_tracking(const VariableTrackingSpec& spec) {
  return std::make_unique<VariableTracking>(spec);
}

}  // namespace reach::data::tasks
