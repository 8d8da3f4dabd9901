// The operator contract shared by the CPU and CUDA kernels of dilated attention.
//
// Tensors are contiguous [batch_heads, seq_len, head_dim]; with grouped-query attention k and v
// (and their gradients) hold batch_heads / kv_group heads, query head bh reading K/V head
// bh / kv_group (consecutive query heads share one K/V head: [batch, kv_heads * group] order).
// A query at position i
// sees, causally:
//   * window slots w = 0..W-1: key i - w (when i - w >= 0);
//   * offset slots k = 0..K-1: the key at real distance x_k >= W. With lo = floor(x_k)
//     and f = x_k - lo, its key/value are (1 - f) * row[i - lo] + f * row[i - lo - 1]
//     (f == 0 for the static schedules: a plain gather). The slot is visible when
//     i >= ceil(x_k). For the gradient with respect to x_k the direction is always
//     row[i - lo - 1] - row[i - lo] (the right derivative at integer x_k), taken as
//     zero when row i - lo - 1 does not exist.
// Scores are scale * q . k, normalised by one softmax over all visible slots.
// Nothing here depends on torch, so kernels build and test without LibTorch.
#pragma once

#include <cstdint>
#include <string>

namespace reach::kernels {

struct DilatedAttentionParams {
  int64_t batch_heads = 0;          // batch * heads
  int64_t seq_len = 0;              // n >= 1
  int64_t head_dim = 0;             // d >= 1
  int64_t window = 1;               // W >= 1 (W >= n gives dense causal attention)
  const double* offsets = nullptr;  // K real distances, strictly increasing, each >= W
  int64_t num_offsets = 0;          // K >= 0
  double scale = 1.0;               // softmax scale, usually 1 / sqrt(d)
  int64_t kv_group = 1;             // query heads per K/V head (GQA), divides batch_heads
  // Layout of out (forward) and of out and grad_out (backward): 0, [batch_heads, seq_len,
  // head_dim] like q; H > 0, token-major [batch, seq_len, H, head_dim] with H = heads (the
  // output projection's layout). Only the CUDA tensor-core kernels take H > 0.
  int64_t out_heads = 0;

  int64_t kv_batch_heads() const { return batch_heads / kv_group; }

  // Slots per query: min(W, n) window slots followed by K offset slots.
  int64_t window_slots() const { return window < seq_len ? window : seq_len; }
  int64_t slots() const { return window_slots() + num_offsets; }
};

// Returns an empty string when params are valid, else a message naming the problem.
std::string validate_params(const DilatedAttentionParams& params);

}  // namespace reach::kernels
