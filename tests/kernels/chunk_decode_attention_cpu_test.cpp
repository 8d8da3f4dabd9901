// Single-query chunk-attention decode (CPU) against the full CPU operator: at every position
// t, for requests of different lengths in one batch, the decoded output equals row t of the
// full forward on the same sequence (the same float64 arithmetic, so to 1e-13 relative);
// per-request top-k budgets equal the full operator run with that k; several queries per
// request (the newest Q) equal those rows of the full operator; the chunk-mass cut equals a
// float64 reference written from its definition (1e-12); bad params are errors.
// Op harness cases (tests/kernels/harness.hpp): chunk_decode_attention_cpu.*; errors: TESTs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/chunk_attention.hpp"
#include "kernels/cpu/chunk_decode_attention.hpp"
#include "kernels/cpu/reference_chunk_attention.hpp"
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

// The newest Q queries of each request at once (q [B, Hq, Q, d]) equal those rows of the full
// operator; chunks_read [B, Hkv, Q] counts each query's selection.
void check_several_queries(const DecodeCase& c, harness::Report& r) {
  const Problem pr = make_problem(2, c.hq, c.hkv, c.n, c.d, c.dr, c.sel, c.weighting, 14);
  const auto full = full_forward(pr.full, pr);
  const auto& f = pr.full;
  const int64_t n = f.seq_len, d = f.head_dim, dr = f.retrieval_dim, nq = 7;
  const std::vector<int64_t> lengths = {n, n - 5};
  auto p = decode_params(pr, lengths);
  p.queries = nq;
  std::vector<double> q(static_cast<size_t>(2 * c.hq * nq * d)), rq(2 * c.hkv * nq * dr);
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t i = 0; i < nq; ++i) {
      const int64_t t = lengths[static_cast<size_t>(b)] - nq + i;
      for (int64_t h = 0; h < c.hq; ++h) {
        for (int64_t e = 0; e < d; ++e) {
          q[((b * c.hq + h) * nq + i) * d + e] = pr.q[((b * c.hq + h) * n + t) * d + e];
        }
      }
      for (int64_t g = 0; g < c.hkv; ++g) {
        for (int64_t e = 0; e < dr; ++e) {
          rq[((b * c.hkv + g) * nq + i) * dr + e] = pr.r[((b * c.hkv + g) * n + t) * dr + e];
        }
      }
    }
  }
  std::vector<double> out(q.size(), 7.0);
  std::vector<int64_t> read(static_cast<size_t>(2 * c.hkv * nq), -1);
  chunk_decode_attention_cpu<double>(p, q.data(), rq.data(), pr.k.data(), pr.v.data(), pr.l.data(),
                                     out.data(), read.data());
  double worst = 0;
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t i = 0; i < nq; ++i) {
      const int64_t t = lengths[static_cast<size_t>(b)] - nq + i;
      for (int64_t h = 0; h < c.hq; ++h) {
        for (int64_t e = 0; e < d; ++e) {
          const double want = full[((b * c.hq + h) * n + t) * d + e];
          const double got = out[((b * c.hq + h) * nq + i) * d + e];
          worst = std::max(worst, std::abs(got - want) / std::max(1.0, std::abs(want)));
        }
      }
      const int64_t want_read =
          pattern::selected_chunks(c.sel, pattern::candidate_chunks(c.sel, t));
      for (int64_t g = 0; g < c.hkv; ++g) {
        if (read[(b * c.hkv + g) * nq + i] != want_read) {
          return r.fail("request " + std::to_string(b) + " query " + std::to_string(i) + " read " +
                        std::to_string(read[(b * c.hkv + g) * nq + i]) + " chunks, not " +
                        std::to_string(want_read));
        }
      }
    }
  }
  r.lt("worst row error of Q = 7 queries per request vs the full operator", worst, 1e-13);
}

// The chunk-mass cut against a float64 reference from its definition: the reference's
// selection and weights per query; keep chunks in weight order (largest first) until they
// reach p of the total; scale the kept weights to the total; one softmax per kept chunk.
// Also: p = 1 equals no cut, and a smaller p never reads more chunks.
void check_mass_cut(ChunkWeighting weighting, harness::Report& r) {
  const pattern::ChunkSelection sel{4, 5, 0};
  const int64_t hq = 2, hkv = 1, n = 44, d = 6, dr = 5;
  const Problem pr = make_problem(2, hq, hkv, n, d, dr, sel, weighting, 15);
  const auto ref = reference::chunk_forward(pr.full, pr.q, pr.k, pr.v, pr.r, pr.l);
  const int64_t slots = sel.top_k;
  double worst = 0;
  int64_t cut_somewhere = 0;
  for (int64_t t = 0; t < n; ++t) {
    const std::vector<int64_t> lengths = {t + 1, n - t};
    const std::vector<double> masses = {0.6, 0.85};
    auto p = decode_params(pr, lengths);
    p.masses = masses.data();
    std::vector<int64_t> read;
    const auto dec = decode(p, pr, &read);
    auto uncut = decode_params(pr, lengths);
    const std::vector<double> ones = {1.0, 1.0};
    uncut.masses = ones.data();
    std::vector<int64_t> read_all;
    const auto dec_all = decode(uncut, pr, &read_all);
    worst = std::max(worst, worst_row_error(pr, full_forward(pr.full, pr), dec_all, lengths));
    for (int64_t b = 0; b < 2; ++b) {
      const int64_t tb = lengths[static_cast<size_t>(b)] - 1;
      const size_t at = static_cast<size_t>((b * hkv * n + tb) * slots);
      std::vector<std::pair<double, int64_t>> by_weight;  // (weight, slot)
      double total = 0;
      for (int64_t c = 0; c < slots; ++c) {
        if (ref.indices[at + c] < 0) continue;
        by_weight.push_back({ref.weights[at + c], c});
        total += ref.weights[at + c];
      }
      std::stable_sort(by_weight.begin(), by_weight.end(),
                       [](const auto& x, const auto& y) { return x.first > y.first; });
      double kept = 0;
      size_t keep = 0;
      while (keep < by_weight.size()) {
        kept += by_weight[keep++].first;
        if (kept >= masses[static_cast<size_t>(b)] * total) break;
      }
      if (read[static_cast<size_t>(b)] != static_cast<int64_t>(keep)) {
        return r.fail("t=" + std::to_string(tb) + ": read " +
                      std::to_string(read[static_cast<size_t>(b)]) + " chunks, the definition " +
                      std::to_string(keep));
      }
      if (read[static_cast<size_t>(b)] > read_all[static_cast<size_t>(b)]) {
        return r.fail("a mass cut read more chunks than the uncut selection");
      }
      cut_somewhere += static_cast<int64_t>(keep) < static_cast<int64_t>(by_weight.size());
      for (int64_t h = 0; h < hq; ++h) {
        std::vector<double> want(static_cast<size_t>(d), 0.0);
        const double* qt = pr.q.data() + ((b * hq + h) * n + tb) * d;
        for (size_t i = 0; i < keep; ++i) {
          const double w = by_weight[i].first * total / kept;
          const int64_t first = ref.indices[at + by_weight[i].second] * sel.chunk_size;
          std::vector<double> z(static_cast<size_t>(sel.chunk_size));
          double top = -INFINITY, sum = 0;
          for (int64_t j = 0; j < sel.chunk_size; ++j) {
            double dotp = 0;
            for (int64_t e = 0; e < d; ++e)
              dotp += qt[e] * pr.k[((b * hkv) * n + first + j) * d + e];
            top = std::max(top, z[j] = pr.full.scale * dotp);
          }
          for (auto& x : z) sum += (x = std::exp(x - top));
          for (int64_t j = 0; j < sel.chunk_size; ++j) {
            for (int64_t e = 0; e < d; ++e) {
              want[e] += w * z[j] / sum * pr.v[((b * hkv) * n + first + j) * d + e];
            }
          }
        }
        for (int64_t e = 0; e < d; ++e) {
          const double got = dec[(b * hq + h) * d + e];
          worst = std::max(worst, std::abs(got - want[e]) / std::max(1.0, std::abs(want[e])));
        }
      }
    }
  }
  if (cut_somewhere == 0) return r.fail("no query's selection was cut: the test tests nothing");
  r.lt("worst |decode(mass) - definition| / max(1, |definition|), and mass 1 vs the full operator",
       worst, 1e-12);
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
  for (const auto& c : cases) {
    registry.add({"chunk_decode_attention", "cpu", "f64", std::string(c.name) + "_q7",
                  "several_queries", [c](harness::Report& r) { check_several_queries(c, r); }});
  }
  registry.add({"chunk_decode_attention", "cpu", "f64", "mass_softmax", "vs_definition",
                [](harness::Report& r) { check_mass_cut(ChunkWeighting::softmax, r); }});
  registry.add({"chunk_decode_attention", "cpu", "f64", "mass_stick", "vs_definition",
                [](harness::Report& r) { check_mass_cut(ChunkWeighting::stick_breaking, r); }});
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
  const std::vector<double> bad_mass = {1.0, 0.0};
  p.masses = bad_mass.data();
  EXPECT_EQ(message(p), "chunk_decode_attention: request 1: chunk mass 0.000000 is outside (0, 1]");
  p = decode_params(pr, lengths);
  p.queries = 6;
  EXPECT_EQ(message(p),
            "chunk_decode_attention: request 1: length 5 is outside 6..capacity (16) (a request "
            "holds at least its 6 queries)");
  p = decode_params(pr, lengths);
  p.selection.chunk_size = 0;
  EXPECT_EQ(message(p), "chunk_decode_attention: chunk size S must be >= 1, got 0");
}

}  // namespace
}  // namespace reach::kernels
