// float64 reference of the fused SwiGLU activation (kernels/cuda/swiglu.hpp): y = silu(a) * b
// element-wise, silu(a) = a * sigmoid(a) (the MLP's gate a = fc(x), value b = up(x)). Backward:
// da = dy * b * sigmoid(a) * (1 + a * (1 - sigmoid(a))), db = dy * silu(a).
#pragma once

#include <vector>

namespace reach::kernels::cpu {

// a, b of the same size -> y.
void reference_swiglu_forward(const std::vector<double>& a, const std::vector<double>& b,
                              std::vector<double>& y);

// dy, a, b of the same size -> da, db.
void reference_swiglu_backward(const std::vector<double>& dy, const std::vector<double>& a,
                               const std::vector<double>& b, std::vector<double>& da,
                               std::vector<double>& db);

}  // namespace reach::kernels::cpu
