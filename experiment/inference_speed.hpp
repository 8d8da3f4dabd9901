// Forward (inference) speed of a model: tokens/s at a batch and length on its device, in its
// precision, without gradients. Used by `reach experiment` (one figure per finished run) and by
// `reach bench inference` (several models timed side by side, interleaved in rounds, so a ratio
// between schedules is not a ratio between two moments of a shared GPU).
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "model/gpt.hpp"

namespace reach::experiment {

// Tokens/s of model(tokens) for random tokens [batch, seq_len] < vocab on `device` (bf16:
// under autocast): two warm-up passes, then timed passes until at least `min_seconds` and 5
// passes (at most 20); the median. The caller holds a NoGradGuard and has the model in eval().
double inference_tokens_per_s(model::Gpt& model, const torch::Device& device, bool bf16,
                              int64_t batch, int64_t seq_len, int64_t vocab,
                              double min_seconds = 1.0);

}  // namespace reach::experiment
