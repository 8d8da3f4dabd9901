#include "kernels/dilated_attention_params.hpp"

#include <cmath>

namespace reach::kernels {

std::string validate_params(const DilatedAttentionParams& p) {
  if (p.batch_heads < 1) return "batch * heads must be >= 1, got " + std::to_string(p.batch_heads);
  if (p.kv_group < 1 || p.batch_heads % p.kv_group != 0) {
    return "query heads per K/V head (kv_group = " + std::to_string(p.kv_group) +
           ") must be >= 1 and divide batch * heads (" + std::to_string(p.batch_heads) + ")";
  }
  if (p.out_heads < 0 || (p.out_heads > 0 && p.batch_heads % p.out_heads != 0)) {
    return "out_heads (the token-major output's heads, " + std::to_string(p.out_heads) +
           ") must be 0 or divide batch * heads (" + std::to_string(p.batch_heads) + ")";
  }
  if (p.seq_len < 1) return "sequence length must be >= 1, got " + std::to_string(p.seq_len);
  if (p.head_dim < 1) return "head_dim must be >= 1, got " + std::to_string(p.head_dim);
  if (p.window < 1) return "window W must be >= 1, got " + std::to_string(p.window);
  if (!std::isfinite(p.scale) || p.scale <= 0.0) {
    return "scale must be a positive finite number, got " + std::to_string(p.scale);
  }
  if (p.num_offsets < 0) return "number of offsets must be >= 0";
  if (p.num_offsets > 0 && p.offsets == nullptr) return "offsets pointer is null";
  for (int64_t k = 0; k < p.num_offsets; ++k) {
    const double x = p.offsets[k];
    if (!std::isfinite(x)) return "offset " + std::to_string(k) + " is not finite";
    if (x < static_cast<double>(p.window)) {
      return "offset " + std::to_string(k) + " (" + std::to_string(x) +
             ") is inside the window W = " + std::to_string(p.window) + "; offsets must be >= W";
    }
    if (k > 0 && !(x > p.offsets[k - 1])) {
      return "offsets must be strictly increasing (offset " + std::to_string(k) + " = " +
             std::to_string(x) + " follows " + std::to_string(p.offsets[k - 1]) + ")";
    }
  }
  return {};
}

}  // namespace reach::kernels
