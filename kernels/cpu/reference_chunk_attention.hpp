// Plain float64 reference for hierarchical chunk sparse attention, straight from the
// definition in kernels/chunk_attention_params.hpp: per query, every chunk is tested
// against the candidate rule itself, all candidate scores are sorted, the selected chunks
// are weighted (softmax, or the stick-breaking product) and attended one softmax each.
// The backward forms each query's Jacobians explicitly. Slow on purpose: it is what the
// fast kernels are tested against.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/chunk_attention_params.hpp"

namespace reach::kernels::reference {

struct ChunkForward {
  std::vector<double> out;       // [B, Hq, n, d]
  std::vector<int64_t> indices;  // [B, Hkv, n, K], -1 = empty slot
  std::vector<double> weights;   // [B, Hkv, n, K]
};

struct ChunkGradients {
  std::vector<double> q, k, v, r, landmarks;
};

ChunkForward chunk_forward(const ChunkAttentionParams& p, const std::vector<double>& q,
                           const std::vector<double>& k, const std::vector<double>& v,
                           const std::vector<double>& r, const std::vector<double>& landmarks);

ChunkGradients chunk_backward(const ChunkAttentionParams& p, const std::vector<double>& q,
                              const std::vector<double>& k, const std::vector<double>& v,
                              const std::vector<double>& r, const std::vector<double>& landmarks,
                              const std::vector<double>& grad_out);

}  // namespace reach::kernels::reference
