// Float64 reference for decode attention, written from the definition in
// kernels/decode_attention_params.hpp: per (request, head) it builds each slot's key and
// value as explicit interpolation weights over every cache row 0..t, then textbook
// scores, normaliser and mass cut. O(slots * length * d) on purpose: it is what the
// decode kernel is tested against.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/decode_attention_params.hpp"

namespace reach::kernels::reference {

struct DecodeResult {
  std::vector<double> out;         // [batch, heads, queries, d]
  std::vector<int64_t> keys_read;  // [batch, heads, queries]
};

DecodeResult decode_forward(const DecodeAttentionParams& p, const std::vector<double>& q,
                            const std::vector<double>& k_cache, const std::vector<double>& v_cache);

}  // namespace reach::kernels::reference
