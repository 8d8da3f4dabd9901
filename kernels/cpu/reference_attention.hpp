// Plain dense reference for dilated attention: builds the explicit n x n mask and
// interpolation weights of the contract in kernels/dilated_attention_params.hpp and
// runs textbook softmax attention in float64, forward and backward. Slow and
// O(n^2) on purpose: it is what the fast kernels are tested against.
#pragma once

#include <vector>

#include "kernels/dilated_attention_params.hpp"

namespace reach::kernels::reference {

struct Gradients {
  std::vector<double> q, k, v, offsets;
  // Per offset, the sum of the absolute values of the terms summed into `offsets`: the scale
  // that rounding errors in those terms are relative to (the sum itself may cancel to ~0).
  std::vector<double> offsets_magnitude;
};

// out [BH, n, d].
std::vector<double> forward(const DilatedAttentionParams& p, const std::vector<double>& q,
                            const std::vector<double>& k, const std::vector<double>& v);

Gradients backward(const DilatedAttentionParams& p, const std::vector<double>& q,
                   const std::vector<double>& k, const std::vector<double>& v,
                   const std::vector<double>& grad_out);

}  // namespace reach::kernels::reference
