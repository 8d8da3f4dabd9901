#include "pattern/alpha_schedule.hpp"

#include <cmath>
#include <numbers>
#include <numeric>
#include <stdexcept>

namespace reach::pattern {

AlphaSchedule parse_alpha_schedule(const std::string& name) {
  if (name == "fixed") return AlphaSchedule::fixed;
  if (name == "stagger" || name == "linear") return AlphaSchedule::stagger;
  if (name == "coprime") return AlphaSchedule::coprime;
  if (name == "learned") return AlphaSchedule::learned;
  throw std::invalid_argument("unknown alpha schedule '" + name +
                              "' (expected fixed, stagger, coprime or learned)");
}

std::string to_string(AlphaSchedule schedule) {
  switch (schedule) {
    case AlphaSchedule::fixed:
      return "fixed";
    case AlphaSchedule::stagger:
      return "stagger";
    case AlphaSchedule::coprime:
      return "coprime";
    case AlphaSchedule::learned:
      return "learned";
  }
  return "unknown";
}

void validate(const ScheduleSpec& spec) {
  if (spec.layers < 1) {
    throw std::invalid_argument("layers must be >= 1, got " + std::to_string(spec.layers));
  }
  auto positive = [](double v, const char* name) {
    if (!(v > 0.0) || !std::isfinite(v)) {
      throw std::invalid_argument(std::string(name) + " must be a positive finite number, got " +
                                  std::to_string(v));
    }
  };
  if (spec.kind == AlphaSchedule::fixed) {
    positive(spec.alpha0, "alpha0");
  } else {
    positive(spec.alpha_min, "alpha_min");
    positive(spec.alpha_max, "alpha_max");
    if (spec.alpha_max < spec.alpha_min) {
      throw std::invalid_argument("alpha_max must be >= alpha_min");
    }
  }
}

int64_t coprime_step(int64_t layers) {
  // Nearest to L / phi among 2..L-1 coprime with L (s = 1 would be the identity).
  if (layers <= 2) return 1;
  const double target = static_cast<double>(layers) / std::numbers::phi;
  int64_t best = 1;
  double best_distance = 1e300;
  for (int64_t s = 2; s < layers; ++s) {
    const double distance = std::abs(static_cast<double>(s) - target);
    if (std::gcd(s, layers) == 1 && distance < best_distance) {
      best = s;
      best_distance = distance;
    }
  }
  return best;
}

std::vector<double> layer_alphas(const ScheduleSpec& spec) {
  validate(spec);
  const int64_t n = spec.layers;
  std::vector<double> stagger(static_cast<size_t>(n));
  for (int64_t l = 0; l < n; ++l) {
    const double t = n == 1 ? 0.0 : static_cast<double>(l) / static_cast<double>(n - 1);
    stagger[static_cast<size_t>(l)] = spec.alpha_min + (spec.alpha_max - spec.alpha_min) * t;
  }
  switch (spec.kind) {
    case AlphaSchedule::fixed:
      return std::vector<double>(static_cast<size_t>(n), spec.alpha0);
    case AlphaSchedule::stagger:
    case AlphaSchedule::learned:
      return stagger;
    case AlphaSchedule::coprime: {
      const int64_t s = coprime_step(n);
      std::vector<double> permuted(static_cast<size_t>(n));
      for (int64_t l = 0; l < n; ++l) {
        permuted[static_cast<size_t>(l)] = stagger[static_cast<size_t>((l * s) % n)];
      }
      return permuted;
    }
  }
  return stagger;
}

}  // namespace reach::pattern
