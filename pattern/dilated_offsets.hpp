// Which distant keys a query sees: the dilated offsets of docs/definitions.md.
//
// A query at position i sees its local window (distances 0..W-1) plus keys at
// distances d in D, where D is built from a base sequence (Fibonacci or powers
// of two) scaled by a per-layer alpha and restricted to W <= d <= R (reach).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace reach::pattern {

enum class OffsetBase { fibonacci, power_of_two };

// Parses "fibonacci" / "power_of_two" (also "fib", "pow2"); throws std::invalid_argument.
OffsetBase parse_offset_base(const std::string& name);
std::string to_string(OffsetBase base);

// Distinct base values <= limit, ascending: 1,2,3,5,8,... or 1,2,4,8,...
std::vector<int64_t> base_sequence(OffsetBase base, double limit);

struct DilationSpec {
  OffsetBase base = OffsetBase::fibonacci;
  double alpha = 1.0;    // > 0
  int64_t window = 64;   // W >= 1
  int64_t reach = 2048;  // R >= W
};

// Throws std::invalid_argument naming the bad field.
void validate(const DilationSpec& spec);

// Static schedules: round(alpha * b) with std::llround (half away from zero),
// then sorted, de-duplicated, and kept where W <= d <= R.
std::vector<int64_t> integer_offsets(const DilationSpec& spec);

// Learned schedule: the real distances alpha * b kept where W <= x <= R (no
// rounding; keys are interpolated between floor(x) and floor(x)+1). Returned
// with the base value b of each so callers can form d(offset)/d(alpha) = b.
struct FractionalOffsets {
  std::vector<double> distances;
  std::vector<int64_t> base_values;
};
FractionalOffsets fractional_offsets(const DilationSpec& spec);

// Exact count of (query, key) pairs attended over a causal sequence of length n,
// for a window W and integer offsets (each >= W), and that count over n(n+1)/2.
int64_t attended_pairs(int64_t seq_len, int64_t window, const std::vector<int64_t>& offsets);
double attended_fraction(int64_t seq_len, int64_t window, const std::vector<int64_t>& offsets);

}  // namespace reach::pattern
