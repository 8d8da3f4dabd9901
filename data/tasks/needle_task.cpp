#include "data/tasks/needle_task.hpp"

#include <algorithm>
#include <set>
#include <stdexcept>

#include "data/tasks/filler_text.hpp"

namespace reach::data::tasks {
namespace {

constexpr int32_t kBos = 256, kNeedleBegin = 257, kNeedleEnd = 258, kQuery = 259, kAnswer = 260,
                  kEos = 261;
constexpr int64_t kKeyLetters = 4;
constexpr int64_t kMinFiller = 64;  // filler bytes of an example of min_length
const std::string kPrefix = "the special magic number for ";
const std::string kMiddle = " is: ";

class Needle final : public SyntheticTask {
 public:
  explicit Needle(NeedleSpec spec) : spec_(std::move(spec)) {
    if (spec_.needles < 1) {
      throw std::invalid_argument("needle: task.needles must be >= 1, got " +
                                  std::to_string(spec_.needles));
    }
    if (spec_.queries < 1 || spec_.queries > spec_.needles) {
      throw std::invalid_argument("needle: task.queries must be in 1..task.needles (" +
                                  std::to_string(spec_.needles) + "), got " +
                                  std::to_string(spec_.queries));
    }
    if (spec_.digits < 1) {
      throw std::invalid_argument("needle: task.digits must be >= 1, got " +
                                  std::to_string(spec_.digits));
    }
    text_ = load_filler_text(spec_.corpus, "needle");
    require_filler("needle", spec_.corpus, *text_, kMinFiller, "an example needs at least");
  }
  std::string name() const override { return "needle"; }
  int32_t vocab_size() const override { return kEos + 1; }
  int64_t min_length() const override { return fixed_tokens() + kMinFiller; }

  TaskExample sample(int64_t length, std::mt19937_64& rng) const override {
    if (length < min_length()) {
      throw std::invalid_argument("needle: length " + std::to_string(length) +
                                  " is shorter than the task's minimum " +
                                  std::to_string(min_length()));
    }
    const int64_t filler = length - fixed_tokens();
    require_filler("needle", spec_.corpus, *text_, filler,
                   "an example of length " + std::to_string(length) + " needs");
    // Keys (distinct) and values, per example.
    std::uniform_int_distribution<int> letter('a', 'z'), digit('0', '9');
    std::set<std::string> seen;
    std::vector<std::string> keys, values;
    while (static_cast<int32_t>(keys.size()) < spec_.needles) {
      std::string key;
      for (int64_t i = 0; i < kKeyLetters; ++i) key.push_back(static_cast<char>(letter(rng)));
      if (!seen.insert(key).second) continue;
      std::string value;
      for (int32_t i = 0; i < spec_.digits; ++i) value.push_back(static_cast<char>(digit(rng)));
      keys.push_back(std::move(key));
      values.push_back(std::move(value));
    }
    std::vector<int32_t> span;
    span.reserve(static_cast<size_t>(filler));
    append_filler_span(*text_, filler, rng, span);
    const auto offsets = insertion_offsets(filler, spec_.needles, rng);

    TaskExample ex;
    ex.tokens.reserve(static_cast<size_t>(length));
    ex.tokens.push_back(kBos);
    int64_t from = 0;
    for (int32_t n = 0; n < spec_.needles; ++n) {  // needle n (in key order) at offsets[n]
      const auto at = offsets[static_cast<size_t>(n)];
      ex.tokens.insert(ex.tokens.end(), span.begin() + from, span.begin() + at);
      from = at;
      ex.tokens.push_back(kNeedleBegin);
      append_bytes(kPrefix + keys[static_cast<size_t>(n)] + kMiddle, ex.tokens);
      append_bytes(values[static_cast<size_t>(n)], ex.tokens);
      ex.tokens.push_back(kNeedleEnd);
    }
    ex.tokens.insert(ex.tokens.end(), span.begin() + from, span.end());
    // The keys were drawn in random order, so needle order is random; the queries are a
    // random choice of distinct needles in random order.
    std::vector<int32_t> asked(static_cast<size_t>(spec_.needles));
    for (int32_t i = 0; i < spec_.needles; ++i) asked[static_cast<size_t>(i)] = i;
    std::shuffle(asked.begin(), asked.end(), rng);
    asked.resize(static_cast<size_t>(spec_.queries));
    std::vector<int64_t> answer_at;
    for (int32_t q : asked) {
      ex.tokens.push_back(kQuery);
      append_bytes(keys[static_cast<size_t>(q)], ex.tokens);
      answer_at.push_back(static_cast<int64_t>(ex.tokens.size()));
      ex.tokens.push_back(kAnswer);
      append_bytes(values[static_cast<size_t>(q)], ex.tokens);
    }
    ex.tokens.push_back(kEos);
    ex.targets.assign(ex.tokens.size(), kIgnore);
    for (int64_t at :
         answer_at) {  // the answer marker predicts digit 1, ..., the last but one the last
      for (int64_t p = at; p < at + spec_.digits; ++p) {
        ex.targets[static_cast<size_t>(p)] = ex.tokens[static_cast<size_t>(p + 1)];
      }
      ex.answers.emplace_back(at, at + spec_.digits);
    }
    return ex;
  }

 private:
  int64_t needle_tokens() const {
    return 2 + static_cast<int64_t>(kPrefix.size() + kMiddle.size()) + kKeyLetters + spec_.digits;
  }
  int64_t query_tokens() const { return 2 + kKeyLetters + spec_.digits; }
  int64_t fixed_tokens() const {
    return 2 + spec_.needles * needle_tokens() + spec_.queries * query_tokens();
  }

  NeedleSpec spec_;
  std::shared_ptr<const std::string> text_;
};

}  // namespace

std::unique_ptr<SyntheticTask> make_needle(const NeedleSpec& spec) {
  return std::make_unique<Needle>(spec);
}

}  // namespace reach::data::tasks
