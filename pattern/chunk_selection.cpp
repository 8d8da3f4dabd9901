#include "pattern/chunk_selection.hpp"

#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace reach::pattern {

ChunkBudgetRule parse_chunk_budget_rule(const std::string& name) {
  if (name == "fixed") return ChunkBudgetRule::fixed;
  if (name == "fraction") return ChunkBudgetRule::fraction;
  if (name == "sqrt") return ChunkBudgetRule::sqrt;
  if (name == "log2") return ChunkBudgetRule::log2;
  throw std::invalid_argument("unknown chunk budget rule '" + name +
                              "' (expected fixed, fraction, sqrt or log2)");
}

std::string to_string(ChunkBudgetRule rule) {
  switch (rule) {
    case ChunkBudgetRule::fixed:
      return "fixed";
    case ChunkBudgetRule::fraction:
      return "fraction";
    case ChunkBudgetRule::sqrt:
      return "sqrt";
    case ChunkBudgetRule::log2:
      return "log2";
  }
  return "fixed";
}

void validate(const ChunkSelection& s) {
  if (s.chunk_size < 1) {
    throw std::invalid_argument("chunk size S must be >= 1, got " + std::to_string(s.chunk_size));
  }
  if (s.top_k < 1) {
    throw std::invalid_argument("top-k must be >= 1, got " + std::to_string(s.top_k));
  }
  if (s.window < 0) {
    throw std::invalid_argument("chunk selection window W must be >= 0, got " +
                                std::to_string(s.window));
  }
  if (s.rule == ChunkBudgetRule::fraction && !(s.fraction > 0.0 && s.fraction <= 1.0)) {
    throw std::invalid_argument("chunk budget fraction must be in (0, 1], got " +
                                std::to_string(s.fraction));
  }
  if ((s.rule == ChunkBudgetRule::sqrt || s.rule == ChunkBudgetRule::log2) &&
      !(s.fraction > 0.0 && std::isfinite(s.fraction))) {
    throw std::invalid_argument("chunk budget coefficient of the " + to_string(s.rule) +
                                " rule must be a positive finite number, got " +
                                std::to_string(s.fraction));
  }
  if (s.rule != ChunkBudgetRule::fixed) {
    if (s.min_k < 1 || s.min_k > s.top_k) {
      throw std::invalid_argument("chunk budget min_k must be in 1..top-k (" +
                                  std::to_string(s.top_k) + "), got " + std::to_string(s.min_k));
    }
  }
}

int64_t retrieved_tokens(const ChunkSelection& s, int64_t seq_len) {
  int64_t total = 0;
  for (int64_t t = 0; t < seq_len; ++t) total += selected_chunks(s, candidate_chunks(s, t));
  return total * s.chunk_size;
}

int64_t choosing_queries(const ChunkSelection& s, int64_t seq_len) {
  int64_t count = 0;
  for (int64_t t = 0; t < seq_len; ++t) {
    const int64_t c = candidate_chunks(s, t);
    count += selected_chunks(s, c) < c;
  }
  return count;
}

std::string describe(const ChunkSelection& s) {
  std::string text = "chunk_size=" + std::to_string(s.chunk_size) +
                     " top_k=" + std::to_string(s.top_k) + " window=" + std::to_string(s.window) +
                     " budget=" + to_string(s.rule);
  if (s.rule != ChunkBudgetRule::fixed) {
    char buf[64];
    std::snprintf(buf, sizeof buf, " %s=%g min_k=%lld",
                  s.rule == ChunkBudgetRule::fraction ? "fraction" : "coefficient", s.fraction,
                  static_cast<long long>(s.min_k));
    text += buf;
  }
  return text;
}

}  // namespace reach::pattern
