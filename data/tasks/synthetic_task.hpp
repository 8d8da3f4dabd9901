// Synthetic length-generalisation tasks generated in code (seeded, no downloads), after
// seed 003: multi-query multi-token associative recall, max retrieval, passkey retrieval.
//
// An example is a token sequence plus, per position, the token the model must predict next
// there (or kIgnore). Accuracy counts an answer right only when every one of its tokens is.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace reach::data::tasks {

inline constexpr int32_t kIgnore = -1;

struct TaskExample {
  std::vector<int32_t> tokens;   // model input, length == requested length
  std::vector<int32_t> targets;  // next-token targets per position, kIgnore elsewhere
  // Answer spans: [begin, end) positions in `targets` that form one answer.
  std::vector<std::pair<int64_t, int64_t>> answers;
};

class SyntheticTask {
 public:
  virtual ~SyntheticTask() = default;
  virtual std::string name() const = 0;
  virtual int32_t vocab_size() const = 0;
  // Shortest sequence length the task can be laid out in.
  virtual int64_t min_length() const = 0;
  // Throws std::invalid_argument when length < min_length().
  virtual TaskExample sample(int64_t length, std::mt19937_64& rng) const = 0;
};

// Multi-query associative recall: `pairs` key->value bindings (each key and value
// `tokens_per_item` tokens) spread over the sequence with filler, then `queries` keys
// repeated; the model must emit each key's value after it.
struct AssociativeRecallSpec {
  int32_t num_keys = 64;    // distinct key tokens
  int32_t num_values = 64;  // distinct value tokens
  int32_t pairs = 8;
  int32_t queries = 4;
  int32_t tokens_per_item = 2;
};

// Max retrieval: a sequence of numbers with filler; after the query marker the model must
// emit the largest number seen.
struct MaxRetrievalSpec {
  int32_t num_values = 64;    // numbers 0..num_values-1
  int32_t items = 16;         // how many numbers appear (spread over the sequence)
  int32_t filler_tokens = 1;  // distinct filler tokens, drawn uniformly (1: one repeated token)
};

// Passkey retrieval: a number of `digits` digits hidden at `depth` (0 = start, 1 = end of
// the filler) in repetitive filler; after the query the model must emit the digits.
struct PasskeySpec {
  int32_t digits = 5;
  double depth = -1.0;  // < 0: uniformly random depth per example
};

std::unique_ptr<SyntheticTask> make_associative_recall(const AssociativeRecallSpec& spec);
std::unique_ptr<SyntheticTask> make_max_retrieval(const MaxRetrievalSpec& spec);
std::unique_ptr<SyntheticTask> make_passkey(const PasskeySpec& spec);

// By name: "associative_recall" (alias "mqar"), "max_retrieval", "passkey"; default specs.
std::unique_ptr<SyntheticTask> make_task(const std::string& name);

// Fraction of answers whose every target token equals `predictions` at that position.
double answer_accuracy(const TaskExample& example, const std::vector<int32_t>& predictions);

}  // namespace reach::data::tasks
