#include "kernels/cpu/reference_rope_split.hpp"

#include <stdexcept>

namespace reach::kernels::cpu {
namespace {

void check(const RopeSplitShape& s) {
  if (s.batch < 1 || s.seq_len < 1 || s.heads < 1 || s.head_dim < 2 || s.head_dim % 2 != 0) {
    throw std::invalid_argument("rope_split: batch, seq_len, heads >= 1 and an even head_dim >= 2");
  }
}

// Index of element (b, t, part, h, d) of qkv and (b, h, t, d) of q / k / v.
int64_t qkv_index(const RopeSplitShape& s, int64_t b, int64_t t, int64_t part, int64_t h,
                  int64_t d) {
  return (((b * s.seq_len + t) * 3 + part) * s.heads + h) * s.head_dim + d;
}

}  // namespace

void reference_rope_split_forward(const RopeSplitShape& s, const std::vector<double>& qkv,
                                  const std::vector<double>& cos, const std::vector<double>& sin,
                                  std::vector<double>& q, std::vector<double>& k,
                                  std::vector<double>& v) {
  check(s);
  const int64_t half = s.head_dim / 2;
  q.assign(static_cast<size_t>(s.head_count()), 0.0);
  k = q;
  v = q;
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t t = 0; t < s.seq_len; ++t) {
      for (int64_t h = 0; h < s.heads; ++h) {
        for (int64_t i = 0; i < half; ++i) {
          const double c = cos[static_cast<size_t>(t * half + i)];
          const double sn = sin[static_cast<size_t>(t * half + i)];
          for (int64_t part = 0; part < 3; ++part) {
            const double x1 = qkv[static_cast<size_t>(qkv_index(s, b, t, part, h, i))];
            const double x2 = qkv[static_cast<size_t>(qkv_index(s, b, t, part, h, i + half))];
            auto& out = part == 0 ? q : part == 1 ? k : v;
            const bool rotate = part < 2;
            out[static_cast<size_t>(s.head_index(b, h, t, i))] = rotate ? x1 * c - x2 * sn : x1;
            out[static_cast<size_t>(s.head_index(b, h, t, i + half))] =
                rotate ? x1 * sn + x2 * c : x2;
          }
        }
      }
    }
  }
}

void reference_rope_split_backward(const RopeSplitShape& s, const std::vector<double>& dq,
                                   const std::vector<double>& dk, const std::vector<double>& dv,
                                   const std::vector<double>& cos, const std::vector<double>& sin,
                                   std::vector<double>& dqkv) {
  check(s);
  const int64_t half = s.head_dim / 2;
  dqkv.assign(static_cast<size_t>(s.qkv_count()), 0.0);
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t t = 0; t < s.seq_len; ++t) {
      for (int64_t h = 0; h < s.heads; ++h) {
        for (int64_t i = 0; i < half; ++i) {
          const double c = cos[static_cast<size_t>(t * half + i)];
          const double sn = sin[static_cast<size_t>(t * half + i)];
          for (int64_t part = 0; part < 3; ++part) {
            const auto& g = part == 0 ? dq : part == 1 ? dk : dv;
            const double g1 = g[static_cast<size_t>(s.head_index(b, h, t, i))];
            const double g2 = g[static_cast<size_t>(s.head_index(b, h, t, i + half))];
            const bool rotate = part < 2;
            dqkv[static_cast<size_t>(qkv_index(s, b, t, part, h, i))] =
                rotate ? g1 * c + g2 * sn : g1;
            dqkv[static_cast<size_t>(qkv_index(s, b, t, part, h, i + half))] =
                rotate ? -g1 * sn + g2 * c : g2;
          }
        }
      }
    }
  }
}

}  // namespace reach::kernels::cpu
