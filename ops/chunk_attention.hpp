// LibTorch binding of hierarchical chunk sparse attention (kernels/chunk_attention_params.hpp,
// docs/chunk_attention.md): an autograd function and TORCH_LIBRARY ops
//   reach::chunk_attention(Tensor q, Tensor k, Tensor v, Tensor r, Tensor landmarks,
//                          int chunk_size, int top_k, int window=0, str budget="fixed",
//                          float fraction=1.0, int min_k=1, str weighting="softmax",
//                          float? scale=None, float? retrieval_scale=None) -> Tensor
//   reach::chunk_attention_forward(...)  -> (out, indices, weights, lse)
//   reach::chunk_attention_backward(...) -> (dq, dk, dv, dr, dlandmarks)
// q: [B, Hq, n, d]; k, v: [B, Hkv, n, d] (Hq a multiple of Hkv); r: [B, Hkv, n, dr];
// landmarks: [B, Hkv, n / S, dr] (floor: a trailing partial chunk has no landmark); one
// floating dtype (float32 or float64), one device. Gradients reach q, k, v, r and the
// landmarks (r and landmarks through the chunk weights; the selection is not
// differentiable). The same tensor may serve as q and r (shared retrieval query, Hq = Hkv,
// d = dr): autograd sums both gradients. Queries with no candidate chunk output zeros.
// scale defaults to 1/sqrt(d), retrieval_scale to 1/sqrt(dr).
#pragma once

#include <c10/util/Optional.h>
#include <torch/torch.h>

#include "kernels/chunk_attention_params.hpp"
#include "pattern/chunk_selection.hpp"

namespace reach::ops {

struct ChunkAttentionOptions {
  pattern::ChunkSelection selection;
  kernels::ChunkWeighting weighting = kernels::ChunkWeighting::softmax;
  c10::optional<double> scale;            // default 1/sqrt(d)
  c10::optional<double> retrieval_scale;  // default 1/sqrt(dr)
};

torch::Tensor chunk_attention(const torch::Tensor& q, const torch::Tensor& k,
                              const torch::Tensor& v, const torch::Tensor& r,
                              const torch::Tensor& landmarks, const ChunkAttentionOptions& options);

// Forward without autograd, returning what the backward needs as well: out [B, Hq, n, d],
// indices [B, Hkv, n, top_k] (int64, -1 = empty slot), weights [B, Hkv, n, top_k] and
// lse [B, Hq, n, top_k] (q's dtype on the CPU).
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor> chunk_attention_forward(
    const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& r,
    const torch::Tensor& landmarks, const ChunkAttentionOptions& options);

// Options from the ops' scalar arguments; a bad budget or weighting name is an error naming
// the op.
ChunkAttentionOptions chunk_options_from_args(int64_t chunk_size, int64_t top_k, int64_t window,
                                              c10::string_view budget, double fraction,
                                              int64_t min_k, c10::string_view weighting,
                                              c10::optional<double> scale,
                                              c10::optional<double> retrieval_scale);

}  // namespace reach::ops
