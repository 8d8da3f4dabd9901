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
  // Shortest length the task can be laid out in.
  virtual int64_t min_length() const = 0;
  // Tokens in an example of `length`: the length itself, except for tasks whose length
  // names only the context (associative recall: the queries and answers come on top, as in
  // the paper's data, whose lengths are those of the key-value context).
  virtual int64_t sequence_length(int64_t length) const { return length; }
  // An example of sequence_length(length) tokens. Throws std::invalid_argument when
  // length < min_length().
  virtual TaskExample sample(int64_t length, std::mt19937_64& rng) const = 0;
};

// Multi-query multi-token associative recall, laid out as seed 003's data generator lays it
// out (deep-spin/asentmax, scripts/generate_data.py, MultiQueryMultiTokenRecall; defaults =
// the paper's task: alphabet 256, 10k keys, key/value length 2, 4 queries, 80% of the
// context in bindings). An example of context length L:
//   bos | num_kv rows | (qsep key) x queries | sep | (qsep value) x queries | eos
// with num_kv = min(vocabulary, floor(L * kv_fraction / (2t + 2))) bindings (t =
// tokens_per_item), so the number of pairs grows with L. Each row is R = L / num_kv tokens:
// `key kvsep value space` (2t + 2 tokens) with the other R - 2t - 2 spaces split before and
// after it as the generator's random deletions split them (hypergeometric). The keys of an
// example are distinct draws from a fixed set of `vocabulary` key strings over the alphabet,
// the values likewise from a set of value strings (so bindings are new in every example);
// the queried keys are drawn with replacement. Everything after `sep` is the target: one
// answer per example, right only when every token of it is (the paper's exact match).
struct AssociativeRecallSpec {
  int32_t alphabet = 256;       // symbols that spell keys and values
  int32_t vocabulary = 10000;   // distinct keys (and distinct values) examples draw from
  int32_t tokens_per_item = 2;  // key and value length
  int32_t queries = 4;
  double kv_fraction = 0.8;  // share of the context the bindings take, in (0, 1]
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

// By name: "associative_recall" (alias "mqar"), "max_retrieval", "passkey", and the tasks over
// real text "needle" (data/tasks/needle_task.hpp) and "variable_tracking"
// (data/tasks/variable_tracking_task.hpp); default specs.
std::unique_ptr<SyntheticTask> make_task(const std::string& name);

// Fraction of answers whose every target token equals `predictions` at that position.
double answer_accuracy(const TaskExample& example, const std::vector<int32_t>& predictions);

}  // namespace reach::data::tasks
