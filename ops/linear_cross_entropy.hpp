// The output head and its cross-entropy in one op, in chunks of rows (issue 15): the mean
// cross-entropy of the logits hidden @ weight^T against the targets, without ever holding the
// [N x V] logits in full, forward or backward. At the paper's shapes (32,768 tokens per step,
// a 32,768-token vocabulary) the full logits are 2 GiB in bf16 and 4 GiB in float32 for the
// loss, plus their gradient; here one chunk's [chunk_rows x V] logits exist at a time.
//
// Forward: per chunk, logits in the matrix-product dtype, then logsumexp and the target logit
// in float32 (float64 for float64 inputs); only the per-row logsumexp (N values) is kept.
// Backward: per chunk the logits are recomputed, softmax - onehot is formed from the kept
// logsumexp and scaled by grad / (scored rows), and d hidden (that chunk's rows) and d weight
// (summed over the chunks, in float32 / float64) follow by two matrix products. The extra cost
// is one more [N x D] x [D x V] product (the recomputation) per step.
//
// The matrix products run in the dtype matmul would use: the autocast dtype where autocast is
// on for the inputs' device (as in the full-logits path, whose logits come from an autocast
// matmul), else the inputs' dtype. Statistics (logsumexp, softmax, the loss) are float32, or
// float64 for float64 inputs. Plain tensor ops: the CPU and CUDA alike.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>

namespace reach::ops {

// hidden [N, D] and weight [V, D] floating point (the same dtype unless autocast casts them),
// targets [N] int64 or int32, each in [0, V) or equal to ignore_index (not scored), all on one
// device; chunk_rows >= 1 rows of logits at a time (any value; the last chunk may be shorter).
// Returns the mean over the scored rows of logsumexp(l_i) - l_i[t_i], l = hidden @ weight^T,
// as a scalar in the statistics dtype with gradients for hidden and weight: the value and
// gradients of torch's cross_entropy(hidden @ weight^T, targets, ignore_index) (NaN, and zero
// gradients, when no row is scored, as there).
//
// Throws std::invalid_argument naming the problem for bad shapes, dtypes, devices or
// chunk_rows. Targets out of range are checked on the host for CPU tensors; on CUDA the check
// would wait for the GPU inside the training step, so there (as in torch's own cross_entropy)
// an out-of-range target stops at the gather's device-side bounds assertion.
torch::Tensor linear_cross_entropy(const torch::Tensor& hidden, const torch::Tensor& weight,
                                   const torch::Tensor& targets,
                                   std::optional<int64_t> ignore_index, int64_t chunk_rows);

}  // namespace reach::ops
