// How the training loss meets the output head (train.loss_chunk_rows): through the full
// [tokens x vocab] logits, or in chunks of rows through ops::linear_cross_entropy, which never
// holds them in full (issue 15: at the paper's 32,768 tokens x 32,768 vocabulary the full logits
// are 2 GiB in bf16 and 4 GiB in float32 for the loss, plus their gradient, per step).
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace reach::train {

// train.loss_chunk_rows = -1 (the default): chosen by resolve_loss_chunk_rows.
inline constexpr int64_t kLossChunkRowsAuto = -1;
// The automatic choice chunks from this vocabulary size on. Chunking saves memory, not time: on
// an H200 the paper's exact model (32,768-token vocabulary, 32 x 1024 tokens a step, bf16) took
// 96.4 ms a step chunked (2,048 rows) against 77.8 ms with the full logits (2026-12-02,
// bench/train_step_profile), so below 2^17 tokens of vocabulary the full logits (2 GiB in bf16
// at 32k for that step) are the default.
inline constexpr int64_t kChunkedLossMinVocab = int64_t{1} << 17;
// The automatic chunk holds about this many logits: 2^26 (256 MiB in float32), 2,048 rows at a
// 32,768-token vocabulary; rows are a multiple of 128 (at least 128).
inline constexpr int64_t kAutoChunkLogits = int64_t{1} << 26;

// The rows per chunk the loop uses (LoopSettings::loss_chunk_rows; 0 = full logits) for the
// configured value: >= 1 that many, 0 full logits, -1 automatic: chunked on CUDA when
// vocab >= kChunkedLossMinVocab, else full logits (so the CPU trains exactly as before).
// Throws std::invalid_argument for any other value.
int64_t resolve_loss_chunk_rows(int64_t configured, const torch::Device& device, int64_t vocab);

}  // namespace reach::train
