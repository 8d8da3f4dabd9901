#include "kernels/cpu/decode_attention.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/entmax_attention.hpp"

namespace reach::kernels {
namespace {

// One slot of the key set: the key row (the lower-distance row of an interpolated pair),
// the interpolation fraction towards row - 1, and the distance the ALiBi bias sees.
struct Slot {
  int64_t row;
  double frac;
  double distance;
};

struct Scratch {
  std::vector<Slot> slots;
  std::vector<double> weight;
  std::vector<int64_t> order;
  std::vector<double> acc;
};

template <typename T>
double dot(const T* __restrict a, const T* __restrict b, int64_t d) {
  double acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t t = 0; t < d; ++t) acc += static_cast<double>(a[t]) * static_cast<double>(b[t]);
  return acc;
}

template <typename T>
void axpy(double alpha, const T* __restrict x, double* __restrict y, int64_t d) {
#pragma omp simd
  for (int64_t t = 0; t < d; ++t) y[t] += alpha * static_cast<double>(x[t]);
}

// The slots of request b's query at position t.
void key_set(const DecodeAttentionParams& p, int64_t b, int64_t t, std::vector<Slot>& slots) {
  const int64_t length = t + 1;
  const int64_t window = p.window_of(b), rungs = p.rungs_of(b);
  slots.clear();
  const int64_t nw = std::min(window, length);
  for (int64_t w = 0; w < nw; ++w) slots.push_back({t - w, 0.0, static_cast<double>(w)});
  for (int64_t k = 0; k < rungs; ++k) {
    const double x = p.offsets[k];
    if (x < static_cast<double>(window)) continue;  // inside a widened window
    const double lo = std::floor(x), frac = x - lo;
    const auto first_query = static_cast<int64_t>(lo) + (frac > 0.0 ? 1 : 0);
    if (t < first_query) continue;
    slots.push_back({t - static_cast<int64_t>(lo), frac, x});
  }
}

void softmax(std::vector<double>& z) {
  const double m = *std::max_element(z.begin(), z.end());
  double sum = 0;
  for (double& e : z) sum += (e = std::exp(e - m));
  for (double& e : z) e /= sum;
}

// Keeps the most probable slots until their mass reaches `mass`, renormalised.
void keep_mass(std::vector<double>& weight, double mass, std::vector<int64_t>& order) {
  order.resize(weight.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return weight[static_cast<size_t>(a)] > weight[static_cast<size_t>(b)];
  });
  double kept = 0;
  size_t u = 0;
  while (u < order.size() && kept < mass) kept += weight[static_cast<size_t>(order[u++])];
  for (; u < order.size(); ++u) weight[static_cast<size_t>(order[u])] = 0.0;
  for (double& e : weight) e /= kept;
}

template <typename T>
int64_t decode_one(const DecodeAttentionParams& p, int64_t b, int64_t h, int64_t i, const T* q,
                   const T* k_cache, const T* v_cache, T* out, Scratch& s) {
  const int64_t d = p.head_dim;
  const int64_t kv = h / (p.heads / p.kv_heads);
  const int64_t cache_offset = (b * p.kv_heads + kv) * p.capacity * d;
  const T* kh = k_cache + cache_offset;
  const T* vh = v_cache + cache_offset;
  const int64_t row = (b * p.heads + h) * p.queries + i;  // of q and out
  const T* qi = q + row * d;

  key_set(p, b, p.lengths[b] - p.queries + i, s.slots);
  const size_t size = s.slots.size();
  double multiplier = 1.0;
  if (p.log_n_scaling) {
    const double log_n = std::log(static_cast<double>(size + 1));
    multiplier = p.delta[h] + p.beta[h] * std::pow(log_n, p.gamma[h]);
  }
  const double slope = p.alibi_slopes ? p.alibi_slopes[h] : 0.0;
  s.weight.resize(size);
  for (size_t u = 0; u < size; ++u) {
    const Slot& slot = s.slots[u];
    double raw = dot(qi, kh + slot.row * d, d);
    if (slot.frac > 0.0) {
      raw = (1.0 - slot.frac) * raw + slot.frac * dot(qi, kh + (slot.row - 1) * d, d);
    }
    s.weight[u] = multiplier * p.scale * raw - slope * slot.distance;
  }
  if (p.entmax) {
    entmax_normalise_row(s.weight.data(), static_cast<int64_t>(size), p.entmax_alpha[h]);
  } else {
    softmax(s.weight);
  }
  if (p.mass_of(b) < 1.0) keep_mass(s.weight, p.mass_of(b), s.order);

  s.acc.assign(static_cast<size_t>(d), 0.0);
  int64_t read = 0;
  for (size_t u = 0; u < size; ++u) {
    const double w = s.weight[u];
    if (w == 0.0) continue;
    ++read;
    const Slot& slot = s.slots[u];
    axpy((1.0 - slot.frac) * w, vh + slot.row * d, s.acc.data(), d);
    if (slot.frac > 0.0) axpy(slot.frac * w, vh + (slot.row - 1) * d, s.acc.data(), d);
  }
  T* o = out + row * d;
  for (int64_t t = 0; t < d; ++t) o[t] = static_cast<T>(s.acc[static_cast<size_t>(t)]);
  return read;
}

}  // namespace

template <typename T>
void decode_attention_cpu(const DecodeAttentionParams& p, const T* q, const T* k_cache,
                          const T* v_cache, T* out, int64_t* keys_read) {
  if (auto message = validate_decode_params(p); !message.empty()) {
    throw std::invalid_argument("decode attention: " + message);
  }
  const int64_t tasks = p.batch * p.heads * p.queries;
  // Threads only when there is enough work: a small model's step is microseconds of
  // arithmetic, less than waking a team (on a loaded machine, much less).
  double work = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    work += static_cast<double>(std::min(p.window_of(b), p.lengths[b]) + p.rungs_of(b));
  }
  work *= static_cast<double>(p.heads * p.head_dim * p.queries);
  constexpr double kParallelWork = 1 << 16;  // multiply-adds
  // An exception must not leave an OpenMP region (NaN scores make entmax throw): the first
  // message is kept and rethrown after it.
  std::string error;
#pragma omp parallel if (work >= kParallelWork)
  {
    Scratch scratch;
    // Dynamic: requests of different lengths cost different amounts (dense: O(length)).
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t i = task % p.queries, bh = task / p.queries;
      const int64_t b = bh / p.heads, h = bh % p.heads;
      try {
        const int64_t read = decode_one<T>(p, b, h, i, q, k_cache, v_cache, out, scratch);
        if (keys_read) keys_read[task] = read;
      } catch (const std::exception& e) {
#pragma omp critical(reach_decode_error)
        if (error.empty()) error = e.what();
      }
    }
  }
  if (!error.empty()) throw std::invalid_argument("decode attention: " + error);
}

template void decode_attention_cpu<float>(const DecodeAttentionParams&, const float*, const float*,
                                          const float*, float*, int64_t*);
template void decode_attention_cpu<double>(const DecodeAttentionParams&, const double*,
                                           const double*, const double*, double*, int64_t*);

}  // namespace reach::kernels
