// The decode kernel (one query per request over a KV cache) against
//  * row t of the existing full fused forward (dilated_attention_forward_cpu and
//    entmax_attention_forward_cpu) at every position t: decode must be the same operator;
//  * the float64 reference written from the definition (budgets, GQA, ALiBi, log-n
//    scaling, entmax, the mass cut), on random inputs (never zeros).
//
// Tolerances, relative to the largest reference magnitude: float64 1e-12 (only the
// summation order differs); float32 1e-5, the inference bar: the decode kernel sums in
// float64 while the fused float32 forward sums in float32 over <= a few hundred terms of
// length <= 64 (a few hundred ulps of 6e-8 at worst). An indexing, masking or budget
// mistake gives O(1) errors. Op harness cases (tests/kernels/harness.hpp):
// decode_attention_cpu.{f64,f32}_SHAPE_{vs_full_forward,vs_full_entmax,vs_reference}; the mass
// budget's monotonicity and the errors are plain TESTs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/decode_attention.hpp"
#include "kernels/cpu/dilated_attention.hpp"
#include "kernels/cpu/entmax_attention.hpp"
#include "kernels/cpu/reference_decode_attention.hpp"
#include "tests/kernels/harness.hpp"

namespace reach::kernels {
namespace {

std::vector<double> random_vector(size_t size, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> x(size);
  for (auto& e : x) e = normal(rng);
  return x;
}

template <typename T>
std::vector<T> cast(const std::vector<double>& x) {
  return std::vector<T>(x.begin(), x.end());
}

double max_abs(const std::vector<double>& x) {
  double m = 0;
  for (double e : x) m = std::max(m, std::abs(e));
  return m;
}

template <typename T>
double relative_error(const std::vector<T>& got, const std::vector<double>& want) {
  double err = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::abs(static_cast<double>(got[i]) - want[i]));
  }
  return err / std::max(max_abs(want), 1e-300);
}

template <typename T>
constexpr double tolerance() {
  return sizeof(T) == 8 ? 1e-12 : 1e-5;
}

// Requests of different lengths, each a full sequence [heads, n_b, d] of q, k, v.
struct Requests {
  int64_t heads, d, capacity;
  std::vector<int64_t> full_lengths;
  std::vector<std::vector<double>> q, k, v;  // per request [heads, n_b, d]
};

Requests make_requests(int64_t heads, int64_t d, std::vector<int64_t> lengths,
                       std::mt19937_64& rng) {
  Requests r{heads, d, *std::max_element(lengths.begin(), lengths.end()), lengths, {}, {}, {}};
  for (int64_t n : lengths) {
    const auto size = static_cast<size_t>(heads * n * d);
    r.q.push_back(random_vector(size, rng));
    r.k.push_back(random_vector(size, rng));
    r.v.push_back(random_vector(size, rng));
  }
  return r;
}

// The cache [batch, heads, capacity, d] (unused rows hold random values: never read) and
// the decode queries [batch, heads, d] at positions lengths[b] - 1.
struct DecodeInputs {
  std::vector<double> q, k_cache, v_cache;
};

DecodeInputs decode_inputs(const Requests& r, const std::vector<int64_t>& lengths,
                           std::mt19937_64& rng) {
  const int64_t batch = static_cast<int64_t>(lengths.size()), h = r.heads, d = r.d;
  DecodeInputs in{std::vector<double>(static_cast<size_t>(batch * h * d)),
                  random_vector(static_cast<size_t>(batch * h * r.capacity * d), rng),
                  random_vector(static_cast<size_t>(batch * h * r.capacity * d), rng)};
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t n = r.full_lengths[static_cast<size_t>(b)];
    for (int64_t head = 0; head < h; ++head) {
      for (int64_t j = 0; j < lengths[static_cast<size_t>(b)]; ++j) {
        for (int64_t e = 0; e < d; ++e) {
          const auto src = static_cast<size_t>((head * n + j) * d + e);
          const auto dst = static_cast<size_t>(((b * h + head) * r.capacity + j) * d + e);
          in.k_cache[dst] = r.k[static_cast<size_t>(b)][src];
          in.v_cache[dst] = r.v[static_cast<size_t>(b)][src];
        }
      }
      const int64_t t = lengths[static_cast<size_t>(b)] - 1;
      for (int64_t e = 0; e < d; ++e) {
        in.q[static_cast<size_t>((b * h + head) * d + e)] =
            r.q[static_cast<size_t>(b)][static_cast<size_t>((head * n + t) * d + e)];
      }
    }
  }
  return in;
}

DilatedAttentionParams full_params(int64_t heads, int64_t n, int64_t d, int64_t window,
                                   const std::vector<double>& offsets) {
  DilatedAttentionParams p;
  p.batch_heads = heads;
  p.seq_len = n;
  p.head_dim = d;
  p.window = window;
  p.offsets = offsets.data();
  p.num_offsets = static_cast<int64_t>(offsets.size());
  p.scale = 1.0 / std::sqrt(static_cast<double>(d));
  return p;
}

DecodeAttentionParams decode_params(const Requests& r, const std::vector<int64_t>& lengths,
                                    int64_t window, const std::vector<double>& offsets) {
  DecodeAttentionParams p;
  p.batch = static_cast<int64_t>(lengths.size());
  p.heads = r.heads;
  p.kv_heads = r.heads;
  p.head_dim = r.d;
  p.capacity = r.capacity;
  p.lengths = lengths.data();
  p.window = window;
  p.offsets = offsets.data();
  p.num_offsets = static_cast<int64_t>(offsets.size());
  p.scale = 1.0 / std::sqrt(static_cast<double>(r.d));
  return p;
}

// Row t of a full output [heads, n, d] per request, gathered as [batch, heads, d].
std::vector<double> rows_at(const std::vector<std::vector<double>>& full, const Requests& r,
                            const std::vector<int64_t>& lengths) {
  std::vector<double> rows;
  for (size_t b = 0; b < lengths.size(); ++b) {
    const int64_t n = r.full_lengths[b], t = lengths[b] - 1;
    for (int64_t h = 0; h < r.heads; ++h) {
      const auto begin = full[b].begin() + (h * n + t) * r.d;
      rows.insert(rows.end(), begin, begin + r.d);
    }
  }
  return rows;
}

// Decode steps t = 0 .. max length - 1, request b at position min(t, n_b - 1) shifted so
// the batch always mixes lengths; returns the worst error against the full forward rows.
template <typename T>
double worst_decode_error(const Requests& r, int64_t window, const std::vector<double>& offsets,
                          const std::vector<std::vector<double>>& full, std::mt19937_64& rng) {
  double worst = 0;
  for (int64_t t = 0; t < r.capacity; ++t) {
    std::vector<int64_t> lengths;
    for (size_t b = 0; b < r.full_lengths.size(); ++b) {
      const int64_t n = r.full_lengths[b];
      lengths.push_back((t + 3 * static_cast<int64_t>(b)) % n + 1);
    }
    const auto in = decode_inputs(r, lengths, rng);
    const auto p = decode_params(r, lengths, window, offsets);
    const auto q = cast<T>(in.q), kc = cast<T>(in.k_cache), vc = cast<T>(in.v_cache);
    std::vector<T> out(q.size(), T(NAN));
    decode_attention_cpu<T>(p, q.data(), kc.data(), vc.data(), out.data(), nullptr);
    worst = std::max(worst, relative_error(out, rows_at(full, r, lengths)));
  }
  return worst;
}

struct FamilyCase {
  const char* name;
  int64_t heads, d, window;
  std::vector<double> offsets;
  std::vector<int64_t> lengths;
};

std::vector<FamilyCase> family_cases() {
  return {
      {"dense", 2, 16, int64_t{1} << 40, {}, {37, 5, 64}},
      {"window", 3, 32, 8, {}, {50, 1, 23}},
      {"fibonacci", 2, 24, 4, {5, 8, 13, 21, 34}, {61, 40, 7}},
      {"power_of_two", 1, 64, 3, {4, 8, 16, 32, 64}, {97, 70}},
      {"learned (fractional)", 2, 16, 5, {5.5, 8.25, 13.75, 22.0, 35.6}, {80, 33, 2}},
  };
}

template <typename T>
void check_decode_equals_full_forward(const FamilyCase& c, uint64_t seed, harness::Report& report) {
  std::mt19937_64 rng(seed);
  {
    const auto r = make_requests(c.heads, c.d, c.lengths, rng);
    std::vector<std::vector<double>> full;
    for (size_t b = 0; b < c.lengths.size(); ++b) {
      const auto p = full_params(c.heads, c.lengths[b], c.d, c.window, c.offsets);
      const auto q = cast<T>(r.q[b]), k = cast<T>(r.k[b]), v = cast<T>(r.v[b]);
      std::vector<T> out(q.size()), lse(static_cast<size_t>(c.heads * c.lengths[b]));
      dilated_attention_forward_cpu<T>(p, q.data(), k.data(), v.data(), out.data(), lse.data());
      full.emplace_back(out.begin(), out.end());
    }
    report.lt("worst max-rel over decode steps vs the full forward rows",
              worst_decode_error<T>(r, c.window, c.offsets, full, rng), tolerance<T>());
  }
}

// Enough work for the threaded path: dense, four heads, long requests of mixed lengths; the
// last position of each against the full forward.
void check_threaded_batch(harness::Report& report) {
  std::mt19937_64 rng(42);
  const int64_t heads = 4, d = 32, dense = int64_t{1} << 40;
  const auto r = make_requests(heads, d, {600, 450, 1, 300}, rng);
  std::vector<std::vector<double>> full;
  for (size_t b = 0; b < r.full_lengths.size(); ++b) {
    const auto p = full_params(heads, r.full_lengths[b], d, dense, {});
    std::vector<double> o(r.q[b].size()), lse(static_cast<size_t>(heads * r.full_lengths[b]));
    dilated_attention_forward_cpu<double>(p, r.q[b].data(), r.k[b].data(), r.v[b].data(), o.data(),
                                          lse.data());
    full.push_back(o);
  }
  const auto& lengths = r.full_lengths;
  const auto in = decode_inputs(r, lengths, rng);
  const auto p = decode_params(r, lengths, dense, {});
  std::vector<double> out(in.q.size());
  std::vector<int64_t> read(static_cast<size_t>(4 * heads));
  decode_attention_cpu<double>(p, in.q.data(), in.k_cache.data(), in.v_cache.data(), out.data(),
                               read.data());
  report.lt("max-rel vs the full forward rows", relative_error(out, rows_at(full, r, lengths)),
            1e-12);
  if (read[0] != 600) report.fail("request 0 read " + std::to_string(read[0]) + " keys, not 600");
  if (read[2 * heads] != 1) report.fail("request 2 (length 1) read more than its own key");
}

// A per-request budget (window W_b, first K_b rungs) is the full operator with that window
// and those offsets: same weights, fewer keys.
void check_budget(harness::Report& report) {
  std::mt19937_64 rng(7);
  const std::vector<double> offsets{8, 13, 21, 34, 55};
  const auto r = make_requests(2, 16, {90, 90, 90, 90}, rng);
  // Per request: window, rungs; the last widens the window past the first two offsets.
  const std::vector<int64_t> windows{8, 3, 8, 20}, rungs{5, 2, 0, 5};
  const std::vector<int64_t> lengths{90, 77, 64, 90};
  const auto in = decode_inputs(r, lengths, rng);
  auto p = decode_params(r, lengths, 8, offsets);
  p.windows = windows.data();
  p.rung_limits = rungs.data();
  std::vector<double> out(in.q.size());
  std::vector<int64_t> read(4 * 2);
  decode_attention_cpu<double>(p, in.q.data(), in.k_cache.data(), in.v_cache.data(), out.data(),
                               read.data());
  std::vector<std::vector<double>> full;
  std::vector<int64_t> expected_read;
  for (size_t b = 0; b < 4; ++b) {
    std::vector<double> kept;
    for (int64_t k = 0; k < rungs[b]; ++k) {
      if (offsets[static_cast<size_t>(k)] >= static_cast<double>(windows[b])) {
        kept.push_back(offsets[static_cast<size_t>(k)]);
      }
    }
    const auto fp = full_params(2, 90, 16, windows[b], kept);
    std::vector<double> o(r.q[b].size()), lse(2 * 90);
    dilated_attention_forward_cpu<double>(fp, r.q[b].data(), r.k[b].data(), r.v[b].data(), o.data(),
                                          lse.data());
    full.push_back(o);
    int64_t visible = windows[b];
    for (double x : kept) visible += x <= static_cast<double>(lengths[b] - 1) ? 1 : 0;
    expected_read.insert(expected_read.end(), {visible, visible});
  }
  report.lt("max-rel vs the full forward with each request's key set",
            relative_error(out, rows_at(full, r, lengths)), 1e-12);
  if (read != expected_read) report.fail("keys read differ from the budgets' key sets");
}

// Entmax, ASEntmax (log-n scaling), SSMax (softmax + log-n scaling) and ALiBi / NAPE
// slopes: decode equals row t of the full entmax operator.
struct Normaliser {
  const char* name;
  bool softmax, log_n;
  const std::vector<double>*delta, *gamma, *slopes;
};

void check_normaliser(int which, harness::Report& report) {
  std::mt19937_64 rng(99 + static_cast<uint64_t>(which));
  const std::vector<double> offsets{6, 10, 16, 26};
  const int64_t heads = 2, d = 16, window = 6, n = 45;
  const std::vector<double> alpha{1.5, 1.25}, delta{1.1, 0.9}, beta{0.3, 0.2}, gamma{1.0, 1.7},
      slopes{0.0, 0.25}, ssmax_delta{0.0, 0.0}, ones{1.0, 1.0};
  const std::vector<Normaliser> normalisers{
      {"entmax", false, false, nullptr, nullptr, nullptr},
      {"asentmax + nape", false, true, &delta, &gamma, &slopes},
      {"ssmax", true, true, &ssmax_delta, &ones, nullptr},
      {"softmax + alibi", true, false, nullptr, nullptr, &slopes},
  };
  {
    const auto& nz = normalisers[static_cast<size_t>(which)];
    const auto r = make_requests(heads, d, {n, n}, rng);
    EntmaxAttentionParams ep;
    ep.base = full_params(heads, n, d, window, offsets);
    ep.num_heads = heads;
    ep.alpha = alpha.data();
    ep.softmax = nz.softmax;
    ep.log_n_scaling = nz.log_n;
    ep.delta = nz.delta ? nz.delta->data() : nullptr;
    ep.beta = nz.log_n ? beta.data() : nullptr;
    ep.gamma = nz.gamma ? nz.gamma->data() : nullptr;
    ep.alibi_slopes = nz.slopes ? nz.slopes->data() : nullptr;
    std::vector<std::vector<double>> full;
    for (size_t b = 0; b < 2; ++b) {
      std::vector<double> o(r.q[b].size());
      entmax_attention_forward_cpu<double>(ep, r.q[b].data(), r.k[b].data(), r.v[b].data(),
                                           o.data());
      full.push_back(o);
    }
    double worst = 0;
    for (int64_t t = 0; t < n; ++t) {
      const std::vector<int64_t> lengths{t + 1, (t + 17) % n + 1};
      const auto in = decode_inputs(r, lengths, rng);
      auto p = decode_params(r, lengths, window, offsets);
      p.entmax = !nz.softmax;
      p.entmax_alpha = alpha.data();
      p.log_n_scaling = nz.log_n;
      p.delta = ep.delta;
      p.beta = ep.beta;
      p.gamma = ep.gamma;
      p.alibi_slopes = ep.alibi_slopes;
      std::vector<double> out(in.q.size());
      decode_attention_cpu<double>(p, in.q.data(), in.k_cache.data(), in.v_cache.data(), out.data(),
                                   nullptr);
      worst = std::max(worst, relative_error(out, rows_at(full, r, lengths)));
    }
    // Entmax's threshold comes from a bisection to machine precision: 1e-10, not 1e-12.
    report.lt(std::string("worst max-rel over decode steps vs the full entmax rows, ") + nz.name,
              worst, 1e-10);
  }
}

// Everything at once against the reference: GQA, budgets per request, mass cut, ALiBi,
// fractional offsets, entmax, both dtypes.
// queries > 1: the last `queries` positions of every request at once.
template <typename T>
void check_against_reference(bool entmax, int64_t queries, harness::Report& report) {
  std::mt19937_64 rng((entmax ? 11 : 12) + static_cast<uint64_t>(queries));
  const int64_t batch = 5, heads = 4, kv_heads = 2, d = 24, capacity = 120;
  const std::vector<double> offsets{7, 11.5, 19, 30.25, 50, 81};
  const std::vector<int64_t> lengths{120, queries, 57, 83, 31}, windows{7, 2, 12, 7, 40},
      rungs{6, 6, 3, 0, 6};
  const std::vector<double> mass{1.0, 0.5, 0.9, 0.3, 0.75};
  const std::vector<double> alpha{1.5, 1.2, 2.0, 1.7}, slopes{0, 0.1, 0.5, 0.02};
  auto in_q = random_vector(static_cast<size_t>(batch * heads * queries * d), rng);
  auto in_k = random_vector(static_cast<size_t>(batch * kv_heads * capacity * d), rng);
  auto in_v = random_vector(in_k.size(), rng);
  // The reference sees the same (rounded) inputs as the kernel.
  const auto q = cast<T>(in_q), kc = cast<T>(in_k), vc = cast<T>(in_v);
  in_q.assign(q.begin(), q.end());
  in_k.assign(kc.begin(), kc.end());
  in_v.assign(vc.begin(), vc.end());
  DecodeAttentionParams p;
  p.batch = batch;
  p.heads = heads;
  p.kv_heads = kv_heads;
  p.head_dim = d;
  p.capacity = capacity;
  p.lengths = lengths.data();
  p.queries = queries;
  p.window = 7;
  p.offsets = offsets.data();
  p.num_offsets = static_cast<int64_t>(offsets.size());
  p.scale = 0.3;
  p.windows = windows.data();
  p.rung_limits = rungs.data();
  p.mass = mass.data();
  p.entmax = entmax;
  p.entmax_alpha = alpha.data();
  p.alibi_slopes = slopes.data();
  const auto want = reference::decode_forward(p, in_q, in_k, in_v);
  std::vector<T> out(q.size(), T(NAN));
  std::vector<int64_t> read(static_cast<size_t>(batch * heads * queries), -1);
  decode_attention_cpu<T>(p, q.data(), kc.data(), vc.data(), out.data(), read.data());

  // float32 here differs from the reference only by the output's rounding (the kernel
  // computes in float64 on the same float32 inputs).
  report.lt("max-rel vs the reference", relative_error(out, want.out),
            sizeof(T) == 8 ? 1e-12 : 1e-6);
  if (read != want.keys_read) report.fail("keys read differ from the reference's");
  // The mass cut reads fewer keys than the key set (request 3: p = 0.3, W 7, no rungs).
  if (!(read[static_cast<size_t>(3 * heads * queries)] < 7)) {
    report.fail("the mass cut did not read fewer keys (request 3)");
  }
  // Request 1's first query sits at position 0: it reads only its own key.
  if (read[static_cast<size_t>(1 * heads * queries)] != 1) {
    report.fail("position 0 read more than the token itself");
  }
}

// Several queries per request: all rows of every request at once (Q = the shortest
// request's length) equal the full forward's last Q rows.
template <typename T>
void check_queries_equal_full_forward(const FamilyCase& c, uint64_t seed, harness::Report& report) {
  std::mt19937_64 rng(seed);
  const auto r = make_requests(c.heads, c.d, c.lengths, rng);
  const int64_t batch = static_cast<int64_t>(c.lengths.size()), h = c.heads, d = c.d;
  const int64_t queries = *std::min_element(c.lengths.begin(), c.lengths.end());
  const auto in = decode_inputs(r, c.lengths, rng);  // the cache (its q is one row: unused)
  std::vector<double> q, want;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t n = c.lengths[static_cast<size_t>(b)];
    const auto p = full_params(h, n, d, c.window, c.offsets);
    const auto qb = cast<T>(r.q[static_cast<size_t>(b)]), kb = cast<T>(r.k[static_cast<size_t>(b)]),
               vb = cast<T>(r.v[static_cast<size_t>(b)]);
    std::vector<T> o(qb.size()), lse(static_cast<size_t>(h * n));
    dilated_attention_forward_cpu<T>(p, qb.data(), kb.data(), vb.data(), o.data(), lse.data());
    for (int64_t head = 0; head < h; ++head) {
      const auto first = static_cast<size_t>((head * n + n - queries) * d);
      const auto end = first + static_cast<size_t>(queries * d);
      q.insert(q.end(), r.q[static_cast<size_t>(b)].begin() + static_cast<std::ptrdiff_t>(first),
               r.q[static_cast<size_t>(b)].begin() + static_cast<std::ptrdiff_t>(end));
      want.insert(want.end(), o.begin() + static_cast<std::ptrdiff_t>(first),
                  o.begin() + static_cast<std::ptrdiff_t>(end));
    }
  }
  auto p = decode_params(r, c.lengths, c.window, c.offsets);
  p.queries = queries;
  const auto qt = cast<T>(q), kc = cast<T>(in.k_cache), vc = cast<T>(in.v_cache);
  std::vector<T> out(qt.size(), T(NAN));
  decode_attention_cpu<T>(p, qt.data(), kc.data(), vc.data(), out.data(), nullptr);
  report.lt("max-rel vs the full forward's last rows", relative_error(out, want), tolerance<T>());
}

std::string family_shape(const FamilyCase& c) {
  std::string name = c.name;
  for (auto& ch : name) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
  while (name.back() == '_') name.pop_back();
  return harness::shape_part("h", double(c.heads)) + "_" + harness::shape_part("d", double(c.d)) +
         "_" + name;
}

REACH_OP_CASES(decode_attention_cpu_cases) {
  // Every position equals row t of the full fused forward, per key-set family.
  for (const auto& c : family_cases()) {
    const std::string shape = family_shape(c);
    registry.add({"decode_attention", "cpu", "f64", shape, "vs_full_forward",
                  [c, shape](harness::Report& r) {
                    check_decode_equals_full_forward<double>(c, harness::seed_of(shape), r);
                  }});
    registry.add({"decode_attention", "cpu", "f32", shape, "vs_full_forward",
                  [c, shape](harness::Report& r) {
                    check_decode_equals_full_forward<float>(c, harness::seed_of(shape), r);
                  }});
    registry.add({"decode_attention", "cpu", "f64", shape + "_all_rows", "vs_full_forward",
                  [c, shape](harness::Report& r) {
                    check_queries_equal_full_forward<double>(c, harness::seed_of(shape), r);
                  }});
    registry.add({"decode_attention", "cpu", "f32", shape + "_all_rows", "vs_full_forward",
                  [c, shape](harness::Report& r) {
                    check_queries_equal_full_forward<float>(c, harness::seed_of(shape), r);
                  }});
  }
  // Enough work for the threaded path.
  registry.add({"decode_attention", "cpu", "f64", "h4_d32_dense_threaded", "vs_full_forward",
                check_threaded_batch});
  registry.add(
      {"decode_attention", "cpu", "f64", "h2_d16_budgets", "vs_full_forward", check_budget});
  const char* normalisers[] = {"entmax", "asentmax_nape", "ssmax", "softmax_alibi"};
  for (int i = 0; i < 4; ++i) {
    registry.add({"decode_attention", "cpu", "f64", std::string("h2_d16_n45_") + normalisers[i],
                  "vs_full_entmax", [i](harness::Report& r) { check_normaliser(i, r); }});
  }
  // Everything at once against the reference.
  for (const bool entmax : {false, true}) {
    for (const int64_t queries : {1, 9}) {
      const std::string shape = std::string("b5_h4_hkv2_d24_q") + std::to_string(queries) + "_" +
                                (entmax ? "entmax" : "softmax");
      registry.add({"decode_attention", "cpu", "f64", shape, "vs_reference",
                    [entmax, queries](harness::Report& r) {
                      check_against_reference<double>(entmax, queries, r);
                    }});
      registry.add({"decode_attention", "cpu", "f32", shape, "vs_reference",
                    [entmax, queries](harness::Report& r) {
                      check_against_reference<float>(entmax, queries, r);
                    }});
    }
  }
}

// The dynamic budget: lowering p never reads more keys; p = 1 is the plain operator.
TEST(DecodeAttentionCpu, MassBudgetReadsFewerKeysAsPDrops) {
  std::mt19937_64 rng(5);
  const auto r = make_requests(1, 16, {200}, rng);
  const std::vector<int64_t> lengths{200};
  const auto in = decode_inputs(r, lengths, rng);
  auto p = decode_params(r, lengths, int64_t{1} << 40, {});
  std::vector<double> plain(16), out(16);
  int64_t plain_read = 0, previous = 201;
  decode_attention_cpu<double>(p, in.q.data(), in.k_cache.data(), in.v_cache.data(), plain.data(),
                               &plain_read);
  EXPECT_EQ(plain_read, 200);
  for (double mass : {1.0, 0.99, 0.9, 0.5, 0.1, 1e-9}) {
    p.mass = &mass;
    int64_t read = 0;
    decode_attention_cpu<double>(p, in.q.data(), in.k_cache.data(), in.v_cache.data(), out.data(),
                                 &read);
    EXPECT_LE(read, previous) << mass;
    previous = read;
    if (mass == 1.0) {
      EXPECT_EQ(out, plain);
    }
  }
  EXPECT_EQ(previous, 1);  // a tiny p keeps only the most probable key
}

TEST(DecodeAttentionCpu, BadParamsGiveClearErrors) {
  std::mt19937_64 rng(3);
  const auto r = make_requests(2, 8, {10}, rng);
  const std::vector<int64_t> lengths{10};
  const auto in = decode_inputs(r, lengths, rng);
  const std::vector<double> offsets{4, 6};
  auto expect_error = [&](DecodeAttentionParams p, const std::string& fragment) {
    std::vector<double> out(in.q.size());
    try {
      decode_attention_cpu<double>(p, in.q.data(), in.k_cache.data(), in.v_cache.data(), out.data(),
                                   nullptr);
      ADD_FAILURE() << "no error, expected: " << fragment;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  const auto good = decode_params(r, lengths, 4, offsets);
  const std::vector<int64_t> too_long{11}, zero{0}, three{3};
  const std::vector<double> mass_zero{0.0}, mass_big{1.5}, bad_alpha{1.0, 1.5}, bad_order{6, 4};
  auto p = good;
  p.lengths = too_long.data();
  expect_error(p, "lengths[0] = 11 is outside 1..capacity (10)");
  p = good;
  p.queries = 11;
  expect_error(p, "lengths[0] = 10 holds fewer keys than its 11 queries");
  p.queries = 0;
  expect_error(p, "queries per request must be >= 1, got 0");
  p = good;
  p.kv_heads = 3;
  expect_error(p, "kv_heads (3) must be >= 1 and divide heads (2)");
  p = good;
  p.windows = zero.data();
  expect_error(p, "budget window of request 0 must be >= 1");
  p = good;
  p.rung_limits = three.data();
  expect_error(p, "budget rungs of request 0 (3) must be in 0..2");
  p = good;
  p.mass = mass_zero.data();
  expect_error(p, "budget mass of request 0 must be in (0, 1]");
  p.mass = mass_big.data();
  expect_error(p, "budget mass of request 0 must be in (0, 1]");
  p = good;
  p.entmax = true;
  expect_error(p, "entmax needs entmax_alpha");
  p.entmax_alpha = bad_alpha.data();
  expect_error(p, "entmax_alpha[0] must be in (1, 2]");
  p = good;
  p.offsets = bad_order.data();
  expect_error(p, "offsets must be strictly increasing");
  p = good;
  p.window = 5;
  expect_error(p, "offset 0 (4.000000) is inside the window W = 5");
  // NaN in the cache under entmax: a clear error, not a crash inside the parallel region.
  auto k_nan = in.k_cache;
  k_nan[9 * 8] = NAN;  // row 9 of request 0, kv head 0: the query's own key
  p = good;
  p.entmax = true;
  const std::vector<double> alpha{1.5, 1.5};
  p.entmax_alpha = alpha.data();
  std::vector<double> out(in.q.size());
  EXPECT_THROW(decode_attention_cpu<double>(p, in.q.data(), k_nan.data(), in.v_cache.data(),
                                            out.data(), nullptr),
               std::invalid_argument);
}

}  // namespace
}  // namespace reach::kernels
