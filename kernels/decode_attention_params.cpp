#include "kernels/decode_attention_params.hpp"

#include <cmath>

namespace reach::kernels {
namespace {

std::string at(const char* what, int64_t index) {
  return std::string(what) + "[" + std::to_string(index) + "]";
}

std::string validate_head_arrays(const DecodeAttentionParams& p) {
  if (p.entmax && p.entmax_alpha == nullptr) return "entmax needs entmax_alpha per head";
  if (p.log_n_scaling && (!p.delta || !p.beta || !p.gamma)) {
    return "log-n scaling needs delta, beta and gamma per head";
  }
  for (int64_t h = 0; h < p.heads; ++h) {
    if (p.entmax && !(p.entmax_alpha[h] > 1.0 && p.entmax_alpha[h] <= 2.0)) {
      return at("entmax_alpha", h) + " must be in (1, 2], got " + std::to_string(p.entmax_alpha[h]);
    }
    if (p.log_n_scaling &&
        !(std::isfinite(p.delta[h]) && std::isfinite(p.beta[h]) && std::isfinite(p.gamma[h]))) {
      return "delta, beta and gamma of head " + std::to_string(h) + " must be finite";
    }
    if (p.alibi_slopes && !(std::isfinite(p.alibi_slopes[h]) && p.alibi_slopes[h] >= 0.0)) {
      return at("alibi_slopes", h) + " must be finite and >= 0";
    }
  }
  return {};
}

}  // namespace

std::string validate_decode_params(const DecodeAttentionParams& p) {
  if (p.batch < 1) return "batch (requests) must be >= 1, got " + std::to_string(p.batch);
  if (p.heads < 1) return "heads must be >= 1, got " + std::to_string(p.heads);
  if (p.kv_heads < 1 || p.heads % p.kv_heads != 0) {
    return "kv_heads (" + std::to_string(p.kv_heads) + ") must be >= 1 and divide heads (" +
           std::to_string(p.heads) + ")";
  }
  if (p.head_dim < 1) return "head_dim must be >= 1, got " + std::to_string(p.head_dim);
  if (p.capacity < 1) return "cache capacity must be >= 1, got " + std::to_string(p.capacity);
  if (p.lengths == nullptr) return "lengths pointer is null";
  if (p.queries < 1) return "queries per request must be >= 1, got " + std::to_string(p.queries);
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
  for (int64_t b = 0; b < p.batch; ++b) {
    if (p.lengths[b] < 1 || p.lengths[b] > p.capacity) {
      return at("lengths", b) + " = " + std::to_string(p.lengths[b]) + " is outside 1..capacity (" +
             std::to_string(p.capacity) + ")";
    }
    if (p.lengths[b] < p.queries) {
      return at("lengths", b) + " = " + std::to_string(p.lengths[b]) +
             " holds fewer keys than its " + std::to_string(p.queries) + " queries";
    }
    if (p.window_of(b) < 1) {
      return "budget window of request " + std::to_string(b) + " must be >= 1, got " +
             std::to_string(p.window_of(b));
    }
    if (p.rungs_of(b) < 0 || p.rungs_of(b) > p.num_offsets) {
      return "budget rungs of request " + std::to_string(b) + " (" + std::to_string(p.rungs_of(b)) +
             ") must be in 0.." + std::to_string(p.num_offsets);
    }
    if (!(p.mass_of(b) > 0.0 && p.mass_of(b) <= 1.0)) {
      return "budget mass of request " + std::to_string(b) + " must be in (0, 1], got " +
             std::to_string(p.mass_of(b));
    }
  }
  return validate_head_arrays(p);
}

}  // namespace reach::kernels
