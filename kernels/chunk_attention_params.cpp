#include "kernels/chunk_attention_params.hpp"

#include <cmath>
#include <stdexcept>

namespace reach::kernels {

ChunkWeighting parse_chunk_weighting(const std::string& name) {
  if (name == "softmax") return ChunkWeighting::softmax;
  if (name == "stick_breaking") return ChunkWeighting::stick_breaking;
  throw std::invalid_argument("unknown chunk weighting '" + name +
                              "' (expected softmax or stick_breaking)");
}

std::string to_string(ChunkWeighting weighting) {
  return weighting == ChunkWeighting::softmax ? "softmax" : "stick_breaking";
}

std::string validate_chunk_heads(std::initializer_list<std::pair<const char*, int64_t>> sizes,
                                 int64_t query_heads, int64_t kv_heads,
                                 const pattern::ChunkSelection& selection) {
  for (const auto& [what, value] : sizes) {
    if (value < 1) return std::string(what) + " must be >= 1, got " + std::to_string(value);
  }
  if (query_heads % kv_heads != 0) {
    return "query heads (" + std::to_string(query_heads) + ") must be a multiple of kv heads (" +
           std::to_string(kv_heads) + ")";
  }
  try {
    pattern::validate(selection);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return {};
}

std::string validate_chunk_params(const ChunkAttentionParams& p) {
  if (auto problem = validate_chunk_heads({{"batch", p.batch},
                                           {"query heads", p.query_heads},
                                           {"kv heads", p.kv_heads},
                                           {"sequence length", p.seq_len},
                                           {"head_dim", p.head_dim},
                                           {"retrieval_dim", p.retrieval_dim}},
                                          p.query_heads, p.kv_heads, p.selection);
      !problem.empty()) {
    return problem;
  }
  for (double s : {p.scale, p.retrieval_scale}) {
    if (!std::isfinite(s) || s <= 0.0) {
      return "scales must be positive finite numbers, got " + std::to_string(s);
    }
  }
  return {};
}

}  // namespace reach::kernels
