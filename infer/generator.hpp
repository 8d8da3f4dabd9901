// Text generation from a trained model: prefill the prompt, then one token per step through
// the decode kernels, choosing each token with the sampler, streaming its text, stopping at
// a stop string or after max_new_tokens.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "infer/budget_rule.hpp"
#include "infer/sampling.hpp"
#include "infer/token_text.hpp"
#include "model/gpt.hpp"

namespace reach::infer {

struct GenerationRequest {
  std::vector<int64_t> prompt;    // token ids, at least one
  int64_t max_new_tokens = 256;   // >= 0
  std::vector<std::string> stop;  // generation ends when the text contains one (not printed)
  SamplingParams sampling;
  BudgetRule budget;
  int64_t max_context = 1 << 20;  // prompt + max_new_tokens may not exceed it (cache memory)
  // On a CUDA device, decode steps replayed from a CUDA graph where the model and budget allow
  // (Session::use_cuda_graph).
  bool cuda_graph = false;
};

struct GenerationResult {
  std::vector<int64_t> tokens;  // generated ids (those of a stop string included)
  std::string text;             // generated text, cut before the stop string
  std::string stop_reason;      // "stop string" or "max new tokens"
  double prefill_seconds = 0, decode_seconds = 0;
  double keys_per_query = 0;  // mean keys read per query and head while decoding (eager steps)
  int64_t graph_steps = 0;    // decode steps replayed from a CUDA graph
  std::string graph_refused;  // why not, when asked for and not taken
};

// Throws std::invalid_argument naming the problem (empty prompt, a prompt over the context
// limit, bad sampling parameters, an empty stop string, a token id outside the vocabulary).
void validate(const GenerationRequest& request, int64_t vocab_size);

// on_text receives each piece of generated text as soon as it is final (text that could
// begin a stop string is held back until it cannot).
GenerationResult generate(model::Gpt model, const TokenText& text, const GenerationRequest& request,
                          const std::function<void(const std::string&)>& on_text = {});

}  // namespace reach::infer
