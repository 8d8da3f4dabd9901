#include "pattern/dilated_offsets.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace reach::pattern {

OffsetBase parse_offset_base(const std::string& name) {
  if (name == "fibonacci" || name == "fib") return OffsetBase::fibonacci;
  if (name == "power_of_two" || name == "pow2" || name == "power-of-two") {
    return OffsetBase::power_of_two;
  }
  throw std::invalid_argument("unknown offset base '" + name +
                              "' (expected 'fibonacci' or 'power_of_two')");
}

std::string to_string(OffsetBase base) {
  return base == OffsetBase::fibonacci ? "fibonacci" : "power_of_two";
}

std::vector<int64_t> base_sequence(OffsetBase base, double limit) {
  std::vector<int64_t> values;
  if (base == OffsetBase::fibonacci) {
    // Distinct Fibonacci values: 1, 2, 3, 5, 8, ... (the repeated leading 1 dropped).
    int64_t a = 1, b = 2;
    while (static_cast<double>(a) <= limit) {
      values.push_back(a);
      const int64_t next = a + b;
      a = b;
      b = next;
    }
  } else {
    for (int64_t p = 1; static_cast<double>(p) <= limit; p *= 2) values.push_back(p);
  }
  return values;
}

void validate(const DilationSpec& spec) {
  if (!(spec.alpha > 0.0) || !std::isfinite(spec.alpha)) {
    throw std::invalid_argument("alpha must be a positive finite number, got " +
                                std::to_string(spec.alpha));
  }
  if (spec.window < 1) {
    throw std::invalid_argument("window W must be >= 1, got " + std::to_string(spec.window));
  }
  if (spec.reach < spec.window) {
    throw std::invalid_argument("reach R (" + std::to_string(spec.reach) +
                                ") must be >= window W (" + std::to_string(spec.window) + ")");
  }
}

std::vector<int64_t> integer_offsets(const DilationSpec& spec) {
  validate(spec);
  std::vector<int64_t> offsets;
  // Bases up to (R + 0.5) / alpha can still round to a distance <= R.
  for (int64_t b : base_sequence(spec.base, (static_cast<double>(spec.reach) + 0.5) / spec.alpha)) {
    const int64_t d = std::llround(spec.alpha * static_cast<double>(b));
    if (d >= spec.window && d <= spec.reach) offsets.push_back(d);
  }
  std::sort(offsets.begin(), offsets.end());
  offsets.erase(std::unique(offsets.begin(), offsets.end()), offsets.end());
  return offsets;
}

FractionalOffsets fractional_offsets(const DilationSpec& spec) {
  validate(spec);
  FractionalOffsets result;
  for (int64_t b : base_sequence(spec.base, static_cast<double>(spec.reach) / spec.alpha)) {
    const double x = spec.alpha * static_cast<double>(b);
    if (x >= static_cast<double>(spec.window) && x <= static_cast<double>(spec.reach)) {
      result.distances.push_back(x);
      result.base_values.push_back(b);
    }
  }
  return result;
}

int64_t attended_pairs(int64_t seq_len, int64_t window, const std::vector<int64_t>& offsets) {
  const int64_t w = std::min(window, seq_len);
  // Queries 0..w-1 see i+1 keys of the window; the rest see w.
  int64_t pairs = w * (w + 1) / 2 + (seq_len - w) * w;
  for (int64_t d : offsets) pairs += std::max<int64_t>(0, seq_len - d);
  return pairs;
}

double attended_fraction(int64_t seq_len, int64_t window, const std::vector<int64_t>& offsets) {
  if (seq_len <= 0) return 0.0;
  const double causal = static_cast<double>(seq_len) * static_cast<double>(seq_len + 1) / 2.0;
  return static_cast<double>(attended_pairs(seq_len, window, offsets)) / causal;
}

}  // namespace reach::pattern
