#include "train/loss_chunk_rows.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace reach::train {

int64_t resolve_loss_chunk_rows(int64_t configured, const torch::Device& device, int64_t vocab) {
  if (configured < kLossChunkRowsAuto) {
    throw std::invalid_argument(
        "train.loss_chunk_rows must be -1 (auto), 0 (full logits) or a positive number of rows, "
        "got " +
        std::to_string(configured));
  }
  if (configured != kLossChunkRowsAuto) return configured;
  if (!device.is_cuda() || vocab < kChunkedLossMinVocab) return 0;
  constexpr int64_t kRowMultiple = 128;
  return std::max(kRowMultiple, kAutoChunkLogits / vocab / kRowMultiple * kRowMultiple);
}

}  // namespace reach::train
