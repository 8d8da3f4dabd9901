// Positions inside attention: RoPE tables and rotation, ALiBi / NAPE slopes.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <utility>

#include "model/model_config.hpp"

namespace reach::model::attention {

// GPT-NeoX-style rotary embedding on [B, H, T, hd]: rotate the two halves of each head.
// cos and sin are [T, hd / 2] tables in x's dtype.
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos,
                         const torch::Tensor& sin);

// RoPE cos and sin for positions [first, first + t), [t, head_dim / 2], cached per device
// and dtype (a cached longer table serves shorter requests; each entry depends only on its
// position, so a slice equals a table made for that length).
class RopeTables {
 public:
  RopeTables(int64_t head_dim, double base) : head_dim_(head_dim), base_(base) {}
  std::pair<torch::Tensor, torch::Tensor> get(int64_t first, int64_t t,
                                              const torch::TensorOptions& options);

 private:
  int64_t head_dim_;
  double base_;
  torch::Tensor cos_, sin_;
};

// Per-head slopes of the distance bias, [heads] float64 (0 for NoPE heads); undefined when
// the positions scheme has no bias. NAPE: the first half of the heads NoPE, the rest ALiBi
// with the slopes of a model of that many heads.
torch::Tensor position_slopes(Positions positions, int64_t heads);

}  // namespace reach::model::attention
