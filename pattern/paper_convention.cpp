#include "pattern/paper_convention.hpp"

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <numeric>
#include <set>
#include <stdexcept>

namespace reach::pattern {

OffsetConvention parse_offset_convention(const std::string& name) {
  if (name == "reach") return OffsetConvention::reach;
  if (name == "paper") return OffsetConvention::paper;
  throw std::invalid_argument("unknown offset convention '" + name + "' (expected reach or paper)");
}

std::string to_string(OffsetConvention convention) {
  return convention == OffsetConvention::paper ? "paper" : "reach";
}

int64_t round_half_even(double x) {
  if (!std::isfinite(x) || std::abs(x) > 9.0e18) {
    throw std::invalid_argument("round_half_even: " + std::to_string(x) + " is not representable");
  }
  // Explicit, so the result does not depend on the floating-point environment's rounding mode.
  const double lower = std::floor(x);
  const double diff = x - lower;
  auto result = static_cast<int64_t>(lower);
  if (diff > 0.5 || (diff == 0.5 && result % 2 != 0)) ++result;
  return result;
}

std::vector<int64_t> paper_base(OffsetBase base, int64_t seq_len) {
  std::vector<int64_t> rungs;
  if (base == OffsetBase::fibonacci) {
    rungs = {1, 2};
    while (static_cast<int64_t>(rungs.size()) < kPaperFibonacciRungs) {
      rungs.push_back(rungs[rungs.size() - 1] + rungs[rungs.size() - 2]);
    }
    return rungs;
  }
  for (int64_t d = 1; d <= seq_len - 1; d *= 2) rungs.push_back(d);
  return rungs;
}

int64_t paper_coprime_step(int64_t layers) {
  if (layers < 1) throw std::invalid_argument("layers must be >= 1, got " + std::to_string(layers));
  if (layers <= 2) return 1;
  for (int64_t s = layers / 2; s >= 2; --s) {
    if (std::gcd(s, layers) == 1) return s;
  }
  throw std::invalid_argument("the paper's coprime schedule has no stride for " +
                              std::to_string(layers) +
                              " layers (no s in 2..L/2 is coprime with L)");
}

std::vector<double> paper_layer_alphas(AlphaSchedule schedule, int64_t layers) {
  if (layers < 1) throw std::invalid_argument("layers must be >= 1, got " + std::to_string(layers));
  const auto n = static_cast<size_t>(layers);
  if (schedule == AlphaSchedule::fixed || schedule == AlphaSchedule::learned) {
    return std::vector<double>(n, 1.0);
  }
  const int64_t stride = schedule == AlphaSchedule::coprime ? paper_coprime_step(layers) : 1;
  std::vector<double> alphas(n);
  for (int64_t l = 0; l < layers; ++l) {
    const int64_t slot = (l * stride) % layers;
    // As written there: 0.5 + 1.0 * (slot / (L - 1)), in float64.
    alphas[static_cast<size_t>(l)] =
        layers > 1 ? 0.5 + 1.0 * (static_cast<double>(slot) / static_cast<double>(layers - 1))
                   : 1.0;
  }
  return alphas;
}

void validate(const PaperDilationSpec& spec) {
  if (!(spec.alpha > 0.0) || !std::isfinite(spec.alpha)) {
    throw std::invalid_argument("alpha must be a positive finite number, got " +
                                std::to_string(spec.alpha));
  }
  if (spec.window < 0) {
    throw std::invalid_argument("window W (distances 0..W) must be >= 0, got " +
                                std::to_string(spec.window));
  }
  if (spec.seq_len < 1) {
    throw std::invalid_argument("seq_len T must be >= 1, got " + std::to_string(spec.seq_len));
  }
}

std::vector<int64_t> paper_offsets(const PaperDilationSpec& spec) {
  validate(spec);
  std::set<int64_t> kept;
  for (const int64_t f : paper_base(spec.base, spec.seq_len)) {
    const int64_t d = round_half_even(spec.alpha * static_cast<double>(f));
    if (d > spec.window && d <= spec.seq_len - 1) kept.insert(d);
  }
  return {kept.begin(), kept.end()};
}

std::vector<int64_t> paper_attended_distances(const PaperDilationSpec& spec) {
  std::vector<int64_t> distances;
  for (int64_t d = 0; d <= std::min(spec.window, spec.seq_len - 1); ++d) distances.push_back(d);
  for (const int64_t d : paper_offsets(spec)) distances.push_back(d);
  return distances;
}

std::vector<PaperLearnedColumn> paper_learned_columns(float alpha, OffsetBase base, int64_t window,
                                                      int64_t seq_len) {
  validate(PaperDilationSpec{base, alpha, window, seq_len});
  std::set<int64_t> used;
  for (int64_t d = 0; d <= std::min(window, seq_len - 1); ++d) used.insert(d);
  std::vector<PaperLearnedColumn> columns;
  for (const int64_t f : paper_base(base, seq_len)) {
    // float32 as there: alpha and the base are float32 tensors.
    const float target = alpha * static_cast<float>(f);
    const auto lo = static_cast<int64_t>(std::floor(target));
    const int64_t rounded = round_half_even(static_cast<double>(target));
    if (rounded <= window || lo > seq_len - 1 || used.contains(lo)) continue;
    used.insert(lo);
    columns.push_back({f, target, lo, target - static_cast<float>(lo)});
  }
  return columns;
}

}  // namespace reach::pattern
