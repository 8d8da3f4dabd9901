// Alpha across depth: how each layer's dilation scale is chosen (docs/definitions.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace reach::pattern {

enum class AlphaSchedule {
  fixed,    // alpha_l = alpha0
  stagger,  // alpha_l = alpha_min + (alpha_max - alpha_min) * l / (L - 1)
  coprime,  // the stagger's values permuted by l -> (l * s) mod L, gcd(s, L) = 1, s ~ L / phi
  learned,  // alpha_l = softplus(theta_l), initialised from the stagger (or fixed when
            // alpha_min == alpha_max); offsets are real and keys interpolated
};

AlphaSchedule parse_alpha_schedule(const std::string& name);  // throws std::invalid_argument
std::string to_string(AlphaSchedule schedule);

struct ScheduleSpec {
  AlphaSchedule kind = AlphaSchedule::stagger;
  int64_t layers = 16;
  double alpha0 = 1.0;     // fixed
  double alpha_min = 1.0;  // stagger / coprime / learned init
  double alpha_max = 3.0;
};

void validate(const ScheduleSpec& spec);  // throws std::invalid_argument naming the field

// The step s of the coprime reassignment for L layers: among 2..L-1 with gcd(s, L) == 1,
// the one nearest L/phi (the smaller on ties). s == 1 (no permutation) for L <= 2.
int64_t coprime_step(int64_t layers);

// alpha_l for l = 0..L-1 (for `learned`, the initial values).
std::vector<double> layer_alphas(const ScheduleSpec& spec);

}  // namespace reach::pattern
