// float64 reference of the RoPE split (kernels/cuda/rope_split.hpp): the qkv projection's
// output [B, T, 3, H, hd] becomes q, k, v in the attention layout [B, H, T, hd], q and k
// rotated by RoPE (the two halves of a head: y1 = x1 cos - x2 sin, y2 = x1 sin + x2 cos, as
// model/attention/positions.cpp). cos and sin are [T, hd / 2]. With token_major, q, k and v are
// laid out [B, T, H, hd] instead (what scaled_dot_product_attention reads through a transposed
// view, and writes its output in: no layout copy on either side).
#pragma once

#include <cstdint>
#include <vector>

namespace reach::kernels::cpu {

struct RopeSplitShape {
  int64_t batch = 1, seq_len = 1, heads = 1, head_dim = 2;
  bool token_major = false;
  // Where element (b, h, t, d) of q, k or v lives.
  int64_t head_index(int64_t b, int64_t h, int64_t t, int64_t d) const {
    return token_major ? ((b * seq_len + t) * heads + h) * head_dim + d
                       : ((b * heads + h) * seq_len + t) * head_dim + d;
  }
  int64_t qkv_count() const { return batch * seq_len * 3 * heads * head_dim; }
  int64_t head_count() const { return batch * heads * seq_len * head_dim; }  // q, k or v
  int64_t table_count() const { return seq_len * head_dim / 2; }
};

// qkv_count() inputs -> q, k, v of head_count() each.
void reference_rope_split_forward(const RopeSplitShape& s, const std::vector<double>& qkv,
                                  const std::vector<double>& cos, const std::vector<double>& sin,
                                  std::vector<double>& q, std::vector<double>& k,
                                  std::vector<double>& v);

// Gradients of q, k, v -> gradient of qkv (the transposed rotation).
void reference_rope_split_backward(const RopeSplitShape& s, const std::vector<double>& dq,
                                   const std::vector<double>& dk, const std::vector<double>& dv,
                                   const std::vector<double>& cos, const std::vector<double>& sin,
                                   std::vector<double>& dqkv);

}  // namespace reach::kernels::cpu
