// The chunk family's encoder (docs/chunk_attention.md): cuts the middle layer's normalised
// hidden states into chunks of S tokens and turns each chunk into what the retrieval layers
// read: its tokens' keys and values and one landmark. With encoder layers, a learned CLS
// token is appended to each chunk and the chunk runs through a small bidirectional
// transformer (RoPE at positions 0..S inside the chunk, CLS last); the landmark is the
// projected, unit-normalised CLS output (or the projected mean of the encoded tokens, or the
// mean of the chunk's keys: model.chunk_landmark). Without encoder layers (the linear ablation)
// the tokens are used as they come (after the final LayerNorm).
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "model/attention/positions.hpp"
#include "model/model_config.hpp"

namespace reach::model::attention {

// The encoded chunks: keys and values [B, H, chunks * S, head_dim] (NoPE), landmarks
// [B, H, chunks, head_dim] with unit norm per head (MoBA scoring: the plain mean key).
struct ChunkMemory {
  torch::Tensor keys, values, landmarks;
};

// One bidirectional pre-norm transformer layer over each chunk (+ CLS): attention without a
// mask, then a GELU MLP.
class ChunkEncoderLayerImpl : public torch::nn::Module {
 public:
  explicit ChunkEncoderLayerImpl(const ModelConfig& config);
  // h: [N, L, D] (N chunks of L tokens) -> [N, L, D]
  torch::Tensor forward(const torch::Tensor& h, const torch::Tensor& cos, const torch::Tensor& sin);

 private:
  int64_t heads_;
  torch::nn::LayerNorm ln1_{nullptr}, ln2_{nullptr};
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr}, fc_{nullptr}, out_{nullptr};
};
TORCH_MODULE(ChunkEncoderLayer);

class ChunkEncoderImpl : public torch::nn::Module {
 public:
  explicit ChunkEncoderImpl(const ModelConfig& config);
  // x: [B, c * S, D], c >= 1 complete chunks -> their memory.
  ChunkMemory forward(const torch::Tensor& x);

 private:
  ModelConfig config_;
  int64_t head_dim_;
  RopeTables rope_;
  torch::Tensor cls_;  // [D], "cls" (registered only with encoder layers and CLS landmarks)
  torch::nn::ModuleList layers_{nullptr};
  torch::nn::LayerNorm ln_f_{nullptr};
  torch::nn::Linear kv_{nullptr}, landmark_{nullptr};
};
TORCH_MODULE(ChunkEncoder);

}  // namespace reach::model::attention
