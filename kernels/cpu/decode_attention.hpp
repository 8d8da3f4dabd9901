// Single-query decode attention over a KV cache, on the CPU: one new token per request,
// batched over requests of different lengths (contract: kernels/decode_attention_params.hpp).
//
// Per (request, head) only the slots of the key set are read: W_b + K_b keys for the
// dilated family (O(W + K) work per token whatever the context length), every key for
// dense. Scores, normaliser and the value sum are in float64 whatever T (float32 caches
// cost no accuracy; the work is the cache reads). OpenMP over requests x heads.
#pragma once

#include <cstdint>

#include "kernels/decode_attention_params.hpp"

namespace reach::kernels {

// q, out: [batch, heads, queries, d]; k_cache, v_cache: [batch, kv_heads, capacity, d].
// keys_read (may be null): [batch, heads, queries], the number of slots whose value was read
// (weight > 0 after the normaliser and the mass budget): the budget actually used. Throws
// std::invalid_argument when params are invalid.
template <typename T>
void decode_attention_cpu(const DecodeAttentionParams& params, const T* q, const T* k_cache,
                          const T* v_cache, T* out, int64_t* keys_read);

}  // namespace reach::kernels
