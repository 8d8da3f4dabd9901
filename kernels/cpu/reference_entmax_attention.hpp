// Plain dense reference for entmax attention, straight from the definition: an
// explicit n x n causal mask of the window + offset key set, scores, the per-row
// log-n multiplier, and alpha-entmax with tau found by a plain long-double bisection
// on the full masked row (or softmax). Float64 output, O(n^2) on purpose.
#pragma once

#include <vector>

#include "kernels/cpu/entmax_attention.hpp"

namespace reach::kernels::reference {

// mask[i * n + j] is true when query i sees key j.
std::vector<bool> entmax_mask(const DilatedAttentionParams& p);

// out [BH, n, d].
std::vector<double> entmax_forward(const EntmaxAttentionParams& p, const std::vector<double>& q,
                                   const std::vector<double>& k, const std::vector<double>& v);

// Probabilities [BH, n, n] (zero outside the mask).
std::vector<double> entmax_probabilities(const EntmaxAttentionParams& p,
                                         const std::vector<double>& q,
                                         const std::vector<double>& k);

}  // namespace reach::kernels::reference
