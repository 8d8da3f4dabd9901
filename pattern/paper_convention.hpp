// The main paper's exact offset convention (seeds 000/001), as its authors' public code
// computes it (docs/definitions.md, "The paper's convention"). reach's own general form
// (dilated_offsets.hpp, alpha_schedule.hpp) stays the default; this one exists so the paper's
// matrix can be rerun exactly.
//
// Differences from reach's form: the window is the distances 0..W (W + 1 keys, self
// included); the Fibonacci base is capped at its first 15 rungs 1, 2, 3, 5, ..., 987; a rung is
// kept iff W < round(alpha f) <= T - 1 with Python's round (ties to even) of the float64
// product; alpha lives in [0.5, 1.5] (stagger 0.5 + l / (L - 1); coprime slot (l S) mod L with
// S the largest s <= L / 2 coprime with L; learned 0.5 + sigmoid(theta), starting at 1).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pattern/alpha_schedule.hpp"
#include "pattern/dilated_offsets.hpp"

namespace reach::pattern {

enum class OffsetConvention { reach, paper };

// "reach" / "paper"; throws std::invalid_argument.
OffsetConvention parse_offset_convention(const std::string& name);
std::string to_string(OffsetConvention convention);

inline constexpr int64_t kPaperFibonacciRungs = 15;

// Python's round() of a float64: the nearest integer, ties to the even one (0.5 * 89 = 44.5
// gives 44).
int64_t round_half_even(double x);

// The base rungs: the first 15 Fibonacci numbers (1, 2, 3, 5, ..., 987), or the powers of two
// 1, 2, 4, ... up to seq_len - 1.
std::vector<int64_t> paper_base(OffsetBase base, int64_t seq_len);

// The coprime (HDC) stride for L > 2 layers: the largest s in L/2 down to 2 with
// gcd(s, L) == 1 (L = 16 gives 7). Throws std::invalid_argument when there is none (L = 4 or
// 6, where the authors' code stops with StopIteration); 1 (no permutation) for L <= 2.
int64_t paper_coprime_step(int64_t layers);

// alpha of every layer: fixed 1; stagger 0.5 + l / (L - 1) (1 when L == 1); coprime the
// stagger's value at slot (l S) mod L; learned the initial value 0.5 + sigmoid(0) = 1.
std::vector<double> paper_layer_alphas(AlphaSchedule schedule, int64_t layers);

struct PaperDilationSpec {
  OffsetBase base = OffsetBase::fibonacci;
  double alpha = 1.0;      // > 0
  int64_t window = 12;     // W >= 0: distances 0..W
  int64_t seq_len = 1024;  // T >= 1: rungs are kept up to T - 1
};

// Throws std::invalid_argument naming the bad field.
void validate(const PaperDilationSpec& spec);

// The rung distances beyond the window, ascending and unique: round_half_even(alpha * f) for
// each base rung f, kept iff W < d <= T - 1. In reach's operator terms these are the offsets
// for a window of W + 1 keys.
std::vector<int64_t> paper_offsets(const PaperDilationSpec& spec);

// Every attended distance, window included: {0, ..., min(W, T-1)} and paper_offsets.
std::vector<int64_t> paper_attended_distances(const PaperDilationSpec& spec);

// The learned path's far columns, in the authors' float32 arithmetic: target = alpha * f;
// a rung is skipped when round(target) <= W, when floor(target) > T - 1, or when
// floor(target) is already used (by the window or an earlier rung). A kept column
// interpolates rows t - lo and t - lo - 1 (the latter clamped to row 0) with weight frac on
// the far row, and is visible from t >= lo.
struct PaperLearnedColumn {
  int64_t base_value = 0;
  float target = 0;
  int64_t lo = 0;
  float frac = 0;
};
std::vector<PaperLearnedColumn> paper_learned_columns(float alpha, OffsetBase base, int64_t window,
                                                      int64_t seq_len);

}  // namespace reach::pattern
