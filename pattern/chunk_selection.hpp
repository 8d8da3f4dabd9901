// Which past chunks a query may retrieve, and how many it reads: the selection side of
// hierarchical chunk sparse attention (docs/chunk_attention.md).
//
// Positions 0..n-1 are cut into chunks of S tokens; chunk i holds tokens iS..(i+1)S-1.
// A query at position t may retrieve chunk i (a "candidate") when
//   * the chunk is fully past: t >= (i+1)S (the query's own chunk never is), and
//   * with a local window of W keys (t-W+1..t; W = 0: no window), the chunk is not wholly
//     inside that window: iS <= t - W. A chunk partly inside stays a candidate, so every
//     past token is reachable by the window or by some candidate chunk.
// Both conditions keep a prefix, so the candidates of t are chunks 0..C(t)-1.
// The query reads k(C) = min(C, budget(C)) of them (the top-scoring ones): budget is top_k
// (fixed), clamp(ceil(f * C), min_k, top_k) (fraction rule), or a rule of C with coefficient f:
// clamp(ceil(f * sqrt(C)), min_k, top_k) (sqrt) or clamp(ceil(f * log2(C)), min_k, top_k)
// (log2; C = 0 and 1 give min_k). top_k is the number of slots a query has; selected_chunks
// never exceeds it.
// The counting functions are inline and host/device so the CUDA kernels share them.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#if defined(__CUDACC__)
#define REACH_HOST_DEVICE __host__ __device__
#else
#define REACH_HOST_DEVICE
#endif

namespace reach::pattern {

enum class ChunkBudgetRule { fixed, fraction, sqrt, log2 };

// Parses "fixed" / "fraction" / "sqrt" / "log2"; throws std::invalid_argument.
ChunkBudgetRule parse_chunk_budget_rule(const std::string& name);
std::string to_string(ChunkBudgetRule rule);

struct ChunkSelection {
  int64_t chunk_size = 64;  // S >= 1
  int64_t top_k = 8;        // k >= 1: slots per query (the most chunks it reads)
  int64_t window = 0;       // W >= 0: chunks wholly inside t-W+1..t are not candidates
  ChunkBudgetRule rule = ChunkBudgetRule::fixed;
  double fraction = 1.0;  // the rule's coefficient f: fraction in (0, 1], sqrt / log2 > 0
  int64_t min_k = 1;      // every rule but fixed: 1 <= min_k <= top_k
};

// Throws std::invalid_argument naming the bad field.
void validate(const ChunkSelection& selection);

// Complete chunks of a sequence of n tokens (a trailing partial chunk is never a candidate).
REACH_HOST_DEVICE inline int64_t num_chunks(const ChunkSelection& s, int64_t seq_len) {
  return seq_len / s.chunk_size;
}

// C(t): the candidates of the query at t are chunks 0..C(t)-1. Index is the integer type of
// the arithmetic (the CUDA kernels use 32 bits: 64-bit division is a slow subroutine there).
template <typename Index = int64_t>
REACH_HOST_DEVICE inline Index candidate_chunks(const ChunkSelection& s, Index t) {
  const auto size = static_cast<Index>(s.chunk_size), window = static_cast<Index>(s.window);
  Index count = t / size;  // (i+1)S <= t
  if (window > 0) {
    if (t < window) return 0;                       // every past chunk lies inside the window
    const Index outside = (t - window) / size + 1;  // iS <= t - W
    count = count < outside ? count : outside;
  }
  return count;
}

// k(C) = min(C, budget(C)). ceil(f * C) forgives a relative 1e-12 of rounding, so
// f = 0.1, C = 30 reads 3 chunks, not 4.
REACH_HOST_DEVICE inline int64_t selected_chunks(const ChunkSelection& s, int64_t candidates) {
  int64_t budget = s.top_k;
  if (s.rule != ChunkBudgetRule::fixed) {
    const double c = static_cast<double>(candidates);
    const double g = s.rule == ChunkBudgetRule::fraction ? c
                     : s.rule == ChunkBudgetRule::sqrt   ? sqrt(c)
                     : candidates > 1                    ? log2(c)
                                                         : 0.0;
    const double x = s.fraction * g;
    budget = static_cast<int64_t>(ceil(x - 1e-12 * (x > 1.0 ? x : 1.0)));
    if (budget < s.min_k) budget = s.min_k;
    if (budget > s.top_k) budget = s.top_k;
  }
  return candidates < budget ? candidates : budget;
}

// Tokens retrieved over a whole causal sequence of n tokens: sum_t k(C(t)) * S.
int64_t retrieved_tokens(const ChunkSelection& selection, int64_t seq_len);

// Queries among 0..n-1 that must choose: fewer chunks read than candidates, k(C(t)) < C(t).
// Enforced selection sparsity in training wants this to be most of them (n >> (k + 1) S).
int64_t choosing_queries(const ChunkSelection& selection, int64_t seq_len);

// One line describing the selection (for logs and `reach pattern`).
std::string describe(const ChunkSelection& selection);

}  // namespace reach::pattern
