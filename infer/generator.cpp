#include "infer/generator.hpp"

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include "infer/session.hpp"

namespace reach::infer {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::vector<float> to_vector(const torch::Tensor& logits) {
  const auto c = logits.contiguous();
  return {c.data_ptr<float>(), c.data_ptr<float>() + c.numel()};
}

// Length of the longest suffix of text that is a proper prefix of some stop string.
size_t held_back(const std::string& text, const std::vector<std::string>& stop) {
  size_t hold = 0;
  for (const auto& s : stop) {
    for (size_t k = std::min(s.size() - 1, text.size()); k > hold; --k) {
      if (text.compare(text.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  return hold;
}

}  // namespace

void validate(const GenerationRequest& r, int64_t vocab_size) {
  if (r.prompt.empty()) throw std::invalid_argument("empty prompt: give at least one token");
  if (r.max_new_tokens < 0) {
    throw std::invalid_argument("max new tokens must be >= 0, got " +
                                std::to_string(r.max_new_tokens));
  }
  if (r.max_context < 1) throw std::invalid_argument("max context must be >= 1");
  const auto total = static_cast<int64_t>(r.prompt.size()) + r.max_new_tokens;
  if (total > r.max_context) {
    throw std::invalid_argument("prompt (" + std::to_string(r.prompt.size()) +
                                " tokens) + max new tokens (" + std::to_string(r.max_new_tokens) +
                                ") exceed the context limit " + std::to_string(r.max_context) +
                                " (--max-context)");
  }
  for (const auto id : r.prompt) {
    if (id < 0 || id >= vocab_size) {
      throw std::invalid_argument("prompt token " + std::to_string(id) +
                                  " is outside the vocabulary (" + std::to_string(vocab_size) +
                                  ")");
    }
  }
  for (const auto& s : r.stop) {
    if (s.empty()) throw std::invalid_argument("stop strings must not be empty");
  }
  validate(r.sampling);
}

GenerationResult generate(model::Gpt model, const TokenText& text, const GenerationRequest& r,
                          const std::function<void(const std::string&)>& on_text) {
  const int64_t vocab = model->config().vocab_size;
  validate(r, vocab);
  if (text.vocab_size() != vocab) {
    throw std::invalid_argument("the tokenizer has " + std::to_string(text.vocab_size()) +
                                " pieces but the model " + std::to_string(vocab));
  }
  GenerationResult result;
  result.stop_reason = "max new tokens";
  Session session(model, static_cast<int64_t>(r.prompt.size()) + r.max_new_tokens, r.budget);
  session.use_cuda_graph(r.cuda_graph);
  Sampler sampler(r.sampling);

  auto start = Clock::now();
  auto logits = session.prefill(r.prompt)[-1];
  result.prefill_seconds = seconds_since(start);

  size_t emitted = 0;  // bytes of result.text already handed to on_text
  auto emit = [&](size_t upto) {
    if (upto > emitted && on_text) on_text(result.text.substr(emitted, upto - emitted));
    emitted = std::max(emitted, upto);
  };
  size_t longest_stop = 0;
  for (const auto& s : r.stop) longest_stop = std::max(longest_stop, s.size());

  start = Clock::now();
  for (int64_t n = 0; n < r.max_new_tokens; ++n) {
    const int64_t token = sampler.next(to_vector(logits));
    result.tokens.push_back(token);
    const size_t before = result.text.size();
    result.text += text.piece(token);
    if (!r.stop.empty()) {
      // Only a match that ends in the new piece is new: search from there.
      const size_t from = before >= longest_stop ? before - longest_stop + 1 : 0;
      size_t cut = std::string::npos;
      for (const auto& s : r.stop) cut = std::min(cut, result.text.find(s, from));
      if (cut != std::string::npos) {
        result.text.resize(cut);
        result.stop_reason = "stop string";
        break;
      }
    }
    emit(result.text.size() - held_back(result.text, r.stop));
    if (n + 1 < r.max_new_tokens) logits = session.step(token);
  }
  emit(result.text.size());
  result.decode_seconds = seconds_since(start);
  result.graph_steps = session.graph_steps();
  result.graph_refused = session.graph_refused();
  const auto& usage = session.usage();
  result.keys_per_query =
      usage.queries > 0 ? static_cast<double>(usage.keys) / static_cast<double>(usage.queries) : 0;
  return result;
}

}  // namespace reach::infer
