// Perplexity versus context length on held-out documents (docs/definitions.md: evaluation).
//
// For each length L: non-overlapping windows of L+1 tokens taken in order from every held-out
// document at least L+1 tokens long, up to max_tokens predicted tokens per length (so every
// model sees exactly the same tokens). Loss is the mean token NLL over all positions of each
// window; per-position loss is also reported in 8 equal buckets of the window. With the
// number of text bytes each token id stands for, bits per byte are reported as well (total
// NLL / ln 2 / bytes of the predicted tokens), so models with different tokenizers compare.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace reach::eval {

struct LengthResult {
  int64_t length = 0;
  int64_t windows = 0;
  int64_t tokens = 0;
  double mean_nll = 0;             // nats per token
  double perplexity = 0;           // per token
  int64_t bytes = 0;               // text bytes of the predicted tokens (0: not known)
  double bits_per_byte = 0;        // 0 when bytes are not known
  std::vector<double> bucket_nll;  // 8 buckets over positions 0..L-1
};

using LogitsFn = std::function<torch::Tensor(const torch::Tensor&)>;  // [B, T] -> [B, T, V]

// Throws std::invalid_argument when no held-out document is long enough for a length or
// max_tokens < 1. token_bytes: bytes per token id (empty: bits per byte not computed).
std::vector<LengthResult> evaluate_lengths(const LogitsFn& logits,
                                           const std::vector<std::vector<int64_t>>& documents,
                                           const std::vector<int64_t>& lengths, int64_t max_tokens,
                                           int64_t tokens_per_batch = 8192,
                                           const std::vector<int64_t>& token_bytes = {});

// Checked before any evaluation starts: throws std::invalid_argument when the longest of
// `lengths` finds no document of length + 1 tokens, naming the longest document and ending
// with `remedy` (which key or flag to change).
void require_heldout_length(const std::vector<std::vector<int64_t>>& documents,
                            const std::vector<int64_t>& lengths, const std::string& remedy);

}  // namespace reach::eval
