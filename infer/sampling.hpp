// Choosing the next token from the logits: greedy, or sampling with temperature, top-k and
// top-p (nucleus), from a seeded generator (same seed, same tokens).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace reach::infer {

struct SamplingParams {
  double temperature = 0.0;  // 0: greedy (argmax); > 0: sample from softmax(logits / T)
  int64_t top_k = 0;         // > 0: only the k most likely tokens; 0: all
  double top_p = 1.0;        // in (0, 1]: the smallest set of most likely tokens with mass >= p
  uint64_t seed = 0;
};

// Throws std::invalid_argument naming the bad parameter.
void validate(const SamplingParams& params);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // The next token id from one row of logits (vocabulary size entries, finite).
  int64_t next(const std::vector<float>& logits);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<int64_t> order_;
  std::vector<double> weight_;
};

}  // namespace reach::infer
