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

std::string validate_chunk_params(const ChunkAttentionParams& p) {
  auto at_least_one = [](const char* what, int64_t value) -> std::string {
    if (value >= 1) return {};
    return std::string(what) + " must be >= 1, got " + std::to_string(value);
  };
  for (const auto& problem :
       {at_least_one("batch", p.batch), at_least_one("query heads", p.query_heads),
        at_least_one("kv heads", p.kv_heads), at_least_one("sequence length", p.seq_len),
        at_least_one("head_dim", p.head_dim), at_least_one("retrieval_dim", p.retrieval_dim)}) {
    if (!problem.empty()) return problem;
  }
  if (p.query_heads % p.kv_heads != 0) {
    return "query heads (" + std::to_string(p.query_heads) + ") must be a multiple of kv heads (" +
           std::to_string(p.kv_heads) + ")";
  }
  try {
    pattern::validate(p.selection);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  for (double s : {p.scale, p.retrieval_scale}) {
    if (!std::isfinite(s) || s <= 0.0) {
      return "scales must be positive finite numbers, got " + std::to_string(s);
    }
  }
  return {};
}

}  // namespace reach::kernels
