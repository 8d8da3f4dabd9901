// Single-query chunk-attention decode (CPU) against the full CPU operator: at every position
// t, for requests of different lengths in one batch, the decoded output equals row t of the
// full forward on the same sequence (the same float64 arithmetic, so to 1e-13 relative);
// per-request top-k budgets equal the full operator run with that k; bad params are errors.
// Op harness cases (tests/kernels/harness.hpp): chunk_decode_attention_cpu.*; errors: TESTs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/chunk_attention.hpp"
#include "kernels/cpu/chunk_decode_attention.hpp"
#include "tests/kernels/harness.hpp"

namespace reach::kernels {
namespace {

struct Problem {
  ChunkAttentionParams full;
  std::vector<double> q, k, v, r, l;
};

Problem make_problem(int64_t batch, int64_t hq, int64_t hkv, int64_t n, int64_t d, int64_t dr,
                     pattern::ChunkSelection sel, ChunkWeighting weighting, uint64_t seed) {
  Problem pr;
  auto& p = pr.full;
  p.batch = batch;
  p.query_heads = hq;
  p.kv_heads = hkv;
  p.seq_len = n;
  p.head_dim = d;
  p.retrieval_dim = dr;
  p.selection = sel;
  p.weighting = weighting;
  p.scale = 1.0 / std::sqrt(static_cast<double>(d));
  p.retrieval_scale = 1.0 / std::sqrt(static_cast<double>(dr));
  std::mt19937_64 rng(seed);
  auto random = [&](int64_t size, double sd) {
    std::normal_distribution<double> dist(0.0, sd);
    std::vector<double> x(static_cast<size_t>(size));
    for (auto& e : x) e = dist(rng);
    return x;
  };
  pr.q = random(batch * hq * n * d, 1);
  pr.k = random(batch * hkv * n * d, 1);
  pr.v = random(batch * hkv * n * d, 1);
  pr.r = random(batch * hkv * n * dr, 2);
  pr.l = random(batch * hkv * p.chunks() * dr, 1);
  return pr;
}

std::vector<double> full_forward(const ChunkAttentionParams& p, const Problem& pr) {
  std::vector<double> out(pr.q.size());
  chunk_attention_forward_cpu<double>(p, pr.q.data(), pr.k.data(), pr.v.data(), pr.r.data(),
                                      pr.l.data(), out.data(), nullptr, nullptr, nullptr);
  return out;
}

ChunkDecodeParams decode_params(const Problem& pr, const std::vector<int64_t>& lengths) {
  const auto& f = pr.full;
  ChunkDecodeParams p;
  p.batch = f.batch;
  p.query_heads = f.query_heads;
  p.kv_heads = f.kv_heads;
  p.head_dim = f.head_dim;
  p.retrieval_dim = f.retrieval_dim;
  p.capacity = f.seq_len;
  p.landmark_capacity = f.chunks();
  p.lengths = lengths.data();
  p.selection = f.selection;
  p.weighting = f.weighting;
  p.scale = f.scale;
  p.retrieval_scale = f.retrieval_scale;
  return p;
}

// Decodes request b at position lengths[b] - 1 and returns out [B, Hq, d].
std::vector<double> decode(const ChunkDecodeParams& p, const Problem& pr,
                           std::vector<int64_t>* chunks_read = nullptr) {
  const auto& f = pr.full;
  const int64_t n = f.seq_len, d = f.head_dim, dr = f.retrieval_dim;
  std::vector<double> q(static_cast<size_t>(p.batch * p.query_heads * d));
  std::vector<double> r(static_cast<size_t>(p.batch * p.kv_heads * dr));
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t t = p.lengths[b] - 1;
    for (int64_t h = 0; h < p.query_heads; ++h) {
      for (int64_t e = 0; e < d; ++e) {
        q[(b * p.query_heads + h) * d + e] = pr.q[((b * p.query_heads + h) * n + t) * d + e];
      }
    }
    for (int64_t g = 0; g < p.kv_heads; ++g) {
      for (int64_t e = 0; e < dr; ++e) {
        r[(b * p.kv_heads + g) * dr + e] = pr.r[((b * p.kv_heads + g) * n + t) * dr + e];
      }
    }
  }
  std::vector<double> out(q.size(), 7.0);  // not zero: every row must be written
  if (chunks_read) chunks_read->assign(static_cast<size_t>(p.batch * p.kv_heads), -1);
  chunk_decode_attention_cpu<double>(p, q.data(), r.data(), pr.k.data(), pr.v.data(), pr.l.data(),
                                     out.data(), chunks_read ? chunks_read->data() : nullptr);
  return out;
}

double worst_row_error(const Problem& pr, const std::vector<double>& full,
                       const std::vector<double>& dec, const std::vector<int64_t>& lengths) {
  const auto& f = pr.full;
  double worst = 0;
  for (int64_t b = 0; b < f.batch; ++b) {
    for (int64_t h = 0; h < f.query_heads; ++h) {
      for (int64_t e = 0; e < f.head_dim; ++e) {
        const double want =
            full[((b * f.query_heads + h) * f.seq_len + lengths[b] - 1) * f.head_dim + e];
        const double got = dec[(b * f.query_heads + h) * f.head_dim + e];
        worst = std::max(worst, std::abs(got - want) / std::max(1.0, std::abs(want)));
      }
    }
  }
  return worst;
}

struct DecodeCase {
  const char* name;
  int64_t hq, hkv, n, d, dr;
  pattern::ChunkSelection sel;
  ChunkWeighting weighting;
};

// Every position t of two requests of lengths t + 1 and n - t against row t of the full
// operator (worst over t), and the chunks read per request and KV head.
void check_every_position(const DecodeCase& c, harness::Report& r) {
  const Problem pr = make_problem(2, c.hq, c.hkv, c.n, c.d, c.dr, c.sel, c.weighting, 11);
  const auto full = full_forward(pr.full, pr);
  double worst = 0;
  for (int64_t t = 0; t < c.n; ++t) {
    const std::vector<int64_t> lengths = {t + 1, c.n - t};  // two requests, two lengths
    const auto p = decode_params(pr, lengths);
    std::vector<int64_t> read;
    const auto dec = decode(p, pr, &read);
    worst = std::max(worst, worst_row_error(pr, full, dec, lengths));
    for (int64_t b = 0; b < 2; ++b) {
      const int64_t want = pattern::selected_chunks(
          c.sel, pattern::candidate_chunks(c.sel, lengths[static_cast<size_t>(b)] - 1));
      for (int64_t g = 0; g < c.hkv; ++g) {
        if (read[b * c.hkv + g] != want) {
          return r.fail("t=" + std::to_string(t) + ": request " + std::to_string(b) + " read " +
                        std::to_string(read[b * c.hkv + g]) + " chunks, not " +
                        std::to_string(want));
        }
      }
    }
  }
  r.lt("worst row error over every position vs the full operator", worst, 1e-13);
}

// Per-request top-k budgets equal the full operator run with that k (each element within
// 1e-13 * max(1, |want|)).
void check_per_request_top_k(harness::Report& r) {
  Problem pr = make_problem(2, 2, 1, 48, 8, 8, {4, 4, 0}, ChunkWeighting::softmax, 12);
  const std::vector<int64_t> lengths = {48, 40}, top_ks = {1, 3};
  auto p = decode_params(pr, lengths);
  p.top_ks = top_ks.data();
  const auto dec = decode(p, pr);
  double worst = 0;
  for (int64_t b = 0; b < 2; ++b) {
    auto full_params = pr.full;
    full_params.selection.top_k = top_ks[static_cast<size_t>(b)];
    const auto full = full_forward(full_params, pr);
    for (int64_t h = 0; h < 2; ++h) {
      for (int64_t e = 0; e < 8; ++e) {
        const double want = full[((b * 2 + h) * 48 + lengths[static_cast<size_t>(b)] - 1) * 8 + e];
        const double err = std::abs(dec[(b * 2 + h) * 8 + e] - want);
        worst = std::max(worst, std::isnan(err) ? INFINITY : err / std::max(1.0, std::abs(want)));
      }
    }
  }
  r.lt("worst |decode - full(k)| / max(1, |full|)", worst, 1e-13);
}

REACH_OP_CASES(chunk_decode_attention_cpu_cases) {
  using pattern::ChunkBudgetRule;
  const DecodeCase cases[] = {
      {"gqa_tail", 4, 2, 37, 8, 6, {4, 3, 0}, ChunkWeighting::softmax},
      {"window_stick", 2, 1, 40, 4, 5, {4, 2, 9}, ChunkWeighting::stick_breaking},
      {"fraction",
       2,
       2,
       45,
       8,
       4,
       {3, 5, 0, ChunkBudgetRule::fraction, 0.3, 2},
       ChunkWeighting::softmax},
  };
  for (const auto& c : cases) {
    registry.add({"chunk_decode_attention", "cpu", "f64", c.name, "every_position",
                  [c](harness::Report& r) { check_every_position(c, r); }});
  }
  registry.add({"chunk_decode_attention", "cpu", "f64", "per_request_top_k", "vs_full",
                check_per_request_top_k});
}

TEST(ChunkDecodeAttentionCpu, BadParamsAreClearErrors) {
  const Problem pr = make_problem(2, 2, 1, 16, 4, 4, {4, 2, 0}, ChunkWeighting::softmax, 13);
  auto message = [&](const ChunkDecodeParams& p) {
    try {
      decode(p, pr);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  std::vector<int64_t> lengths = {16, 5};
  auto p = decode_params(pr, lengths);
  EXPECT_EQ(message(p), "no error");
  lengths = {0, 5};
  EXPECT_EQ(message(p), "chunk_decode_attention: request 0: length 0 is outside 1..capacity (16)");
  lengths = {16, 17};
  EXPECT_EQ(message(p), "chunk_decode_attention: request 1: length 17 is outside 1..capacity (16)");
  lengths = {16, 5};
  const std::vector<int64_t> bad_k = {2, 3};
  p.top_ks = bad_k.data();
  EXPECT_EQ(message(p), "chunk_decode_attention: request 1: top-k 3 is outside 1..top_k slots (2)");
  p = decode_params(pr, lengths);
  p.landmark_capacity = 3;
  EXPECT_EQ(message(p),
            "chunk_decode_attention: landmark capacity (3) must be >= capacity / chunk size (4)");
  p = decode_params(pr, lengths);
  p.selection.chunk_size = 0;
  EXPECT_EQ(message(p), "chunk_decode_attention: chunk size S must be >= 1, got 0");
}

}  // namespace
}  // namespace reach::kernels
