// A request's attention budget (seed 004): how many keys a query reads, set per request at
// run time over the same weights, as a rule of the current length n (the keys cached,
// including the new token):
//   "full"                          the trained key set (the default)
//   "window=16,rungs=4"             fixed
//   "rungs=2*log2(n)"               a rule of n: c, c*n, c*sqrt(n), c*log2(n) (rounded up)
//   "window=0.05*n,rungs=log2(n)"   both
//   "mass=0.9"                      dynamic: per query, keep keys in score order until their
//                                   attention mass reaches 0.9 (within the key set above)
//   "chunks=2" / "chunks=log2(n)"   chunk family: top-k chunks a query reads
//   "chunks=0.25*c" / "chunks=sqrt(c)" / "chunks=2*log2(c)"
//                                   chunk family: a rule of each query's candidate chunks C
//                                   (ceil(f C) with f in (0, 1], ceil(f sqrt C), ceil(f log2 C);
//                                   at least 1, at most C)
//   "chunk_mass=0.9"                chunk family, dynamic: of the selected chunks, keep those
//                                   whose chunk weights reach 0.9 of their total
// Parts are comma-separated and combine; each of window, rungs, mass, chunks, chunk_mass at
// most once.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace reach::infer {

// A count as a function of n: coefficient * f(n), rounded up. With of_candidates (chunks
// only) the variable is a query's candidate chunks C instead, and the count is resolved per
// query by the chunk selection (pattern::selected_chunks), not here.
struct LengthRule {
  enum class Kind { constant, linear, sqrt, log2 };
  Kind kind = Kind::constant;
  double coefficient = 0;
  bool of_candidates = false;
  int64_t at(int64_t n) const;
};

struct ResolvedBudget {
  std::optional<int64_t> window;  // W (>= 1)
  std::optional<int64_t> rungs;   // offsets beyond the window (>= 0)
  std::optional<double> mass;     // p in (0, 1]
  std::optional<int64_t> chunks;  // top-k chunks (>= 1)
  // Chunks as a rule of each query's candidates C (kind linear, sqrt or log2; not resolved
  // here: C differs per query).
  std::optional<LengthRule> chunk_rule;
  std::optional<double> chunk_mass;  // p in (0, 1]
};

struct BudgetRule {
  std::optional<LengthRule> window, rungs, chunks;
  std::optional<double> mass, chunk_mass;
  std::string text = "full";  // as given, for reports

  bool is_full() const { return !window && !rungs && !mass && !chunks && !chunk_mass; }
  // A cut per query (mass or chunk_mass): every query runs through the decode kernel.
  bool is_dynamic() const { return mass || chunk_mass; }
  // The budget at length n (window and chunks clamped to >= 1, rungs to >= 0).
  ResolvedBudget at(int64_t n) const;
};

// Throws std::invalid_argument naming the bad part.
BudgetRule parse_budget_rule(const std::string& text);

}  // namespace reach::infer
