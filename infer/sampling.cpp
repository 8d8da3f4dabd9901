#include "infer/sampling.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

namespace reach::infer {

void validate(const SamplingParams& p) {
  if (!(std::isfinite(p.temperature) && p.temperature >= 0.0)) {
    throw std::invalid_argument("temperature must be >= 0 (0 = greedy), got " +
                                std::to_string(p.temperature));
  }
  if (p.top_k < 0) {
    throw std::invalid_argument("top_k must be >= 0 (0 = off), got " + std::to_string(p.top_k));
  }
  if (!(p.top_p > 0.0 && p.top_p <= 1.0)) {
    throw std::invalid_argument("top_p must be in (0, 1], got " + std::to_string(p.top_p));
  }
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  validate(params);
}

int64_t Sampler::next(const std::vector<float>& logits) {
  if (logits.empty()) throw std::invalid_argument("sampling: empty logits");
  const auto size = static_cast<int64_t>(logits.size());
  if (params_.temperature == 0.0) {
    return std::max_element(logits.begin(), logits.end()) - logits.begin();
  }
  // Most likely first; ties keep the lower id, so the order is deterministic.
  order_.resize(logits.size());
  std::iota(order_.begin(), order_.end(), int64_t{0});
  int64_t keep = params_.top_k > 0 ? std::min(params_.top_k, size) : size;
  auto by_logit = [&](int64_t a, int64_t b) {
    const float la = logits[static_cast<size_t>(a)], lb = logits[static_cast<size_t>(b)];
    return la > lb || (la == lb && a < b);
  };
  std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), by_logit);
  const double top = logits[static_cast<size_t>(order_[0])];
  weight_.resize(static_cast<size_t>(keep));
  double sum = 0;
  for (int64_t u = 0; u < keep; ++u) {
    const double z =
        (logits[static_cast<size_t>(order_[static_cast<size_t>(u)])] - top) / params_.temperature;
    sum += (weight_[static_cast<size_t>(u)] = std::exp(z));
  }
  if (params_.top_p < 1.0) {
    double mass = 0;
    int64_t u = 0;
    while (u < keep && mass < params_.top_p * sum) mass += weight_[static_cast<size_t>(u++)];
    keep = std::max<int64_t>(u, 1);
    sum = mass > 0 ? mass : weight_[0];
  }
  // Inverse CDF from mt19937_64's bits directly: std::uniform_real_distribution's algorithm
  // differs between standard libraries, this draw does not.
  const double draw = static_cast<double>(rng_() >> 11) * 0x1.0p-53 * sum;
  double cumulative = 0;
  for (int64_t u = 0; u < keep; ++u) {
    cumulative += weight_[static_cast<size_t>(u)];
    if (draw < cumulative) return order_[static_cast<size_t>(u)];
  }
  return order_[static_cast<size_t>(keep - 1)];
}

}  // namespace reach::infer
