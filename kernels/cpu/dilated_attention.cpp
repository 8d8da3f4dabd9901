#include "kernels/cpu/dilated_attention.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

namespace reach::kernels {
namespace {

template <typename T>
inline T dot(const T* __restrict a, const T* __restrict b, int64_t d) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t t = 0; t < d; ++t) acc += a[t] * b[t];
  return acc;
}

template <typename T>
inline void axpy(T alpha, const T* __restrict x, T* __restrict y, int64_t d) {
#pragma omp simd
  for (int64_t t = 0; t < d; ++t) y[t] += alpha * x[t];
}

// One offset slot: integer part lo, fraction f in [0, 1).
template <typename T>
struct OffsetSlot {
  int64_t lo;
  T frac;
  int64_t min_query;  // first query that sees this slot: ceil(x)
};

template <typename T>
std::vector<OffsetSlot<T>> offset_slots(const DilatedAttentionParams& p) {
  std::vector<OffsetSlot<T>> slots(static_cast<size_t>(p.num_offsets));
  for (int64_t k = 0; k < p.num_offsets; ++k) {
    const double x = p.offsets[k];
    const double lo = std::floor(x);
    const double frac = x - lo;
    slots[static_cast<size_t>(k)] = {static_cast<int64_t>(lo), static_cast<T>(frac),
                                     static_cast<int64_t>(lo) + (frac > 0.0 ? 1 : 0)};
  }
  return slots;
}

void check(const DilatedAttentionParams& p) {
  if (auto message = validate_params(p); !message.empty()) {
    throw std::invalid_argument("dilated attention: " + message);
  }
  if (p.out_heads != 0) {
    throw std::invalid_argument(
        "dilated attention (CPU): out and grad_out must be [batch_heads, n, d] (out_heads = 0); "
        "the token-major layout is the CUDA tensor-core kernels' only");
  }
}

// Scores of row i into s[0..S): window slots then offset slots; invisible slots get -inf.
// Also returns, per offset slot, q . k_lo and q . k_hi (needed by the backward).
template <typename T>
void row_scores(const DilatedAttentionParams& p, const std::vector<OffsetSlot<T>>& slots,
                const T* qi, const T* kh, int64_t i, T* s, T* qk_lo, T* qk_hi) {
  const int64_t d = p.head_dim;
  const int64_t ws = p.window_slots();
  const T scale = static_cast<T>(p.scale);
  const T neg_inf = -std::numeric_limits<T>::infinity();
  const int64_t nw = std::min<int64_t>(ws, i + 1);
  for (int64_t w = 0; w < nw; ++w) s[w] = scale * dot(qi, kh + (i - w) * d, d);
  for (int64_t w = nw; w < ws; ++w) s[w] = neg_inf;
  for (size_t k = 0; k < slots.size(); ++k) {
    const auto& o = slots[k];
    T* sk = s + ws + static_cast<int64_t>(k);
    if (i < o.min_query) {
      *sk = neg_inf;
      continue;
    }
    const T lo = dot(qi, kh + (i - o.lo) * d, d);
    T hi = 0;
    if (o.frac > 0) hi = dot(qi, kh + (i - o.lo - 1) * d, d);
    if (qk_lo) qk_lo[k] = lo;
    if (qk_hi) qk_hi[k] = hi;
    *sk = scale * ((1 - o.frac) * lo + o.frac * hi);
  }
}

}  // namespace

template <typename T>
void dilated_attention_forward_cpu(const DilatedAttentionParams& p, const T* q, const T* k,
                                   const T* v, T* out, T* lse) {
  check(p);
  const int64_t n = p.seq_len, d = p.head_dim, ws = p.window_slots(), S = p.slots();
  const auto slots = offset_slots<T>(p);
  const int64_t rows = p.batch_heads * n;
#pragma omp parallel
  {
    std::vector<T> s(static_cast<size_t>(S));
    std::vector<T> acc(static_cast<size_t>(d));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t bh = r / n, i = r % n;
      const T* qi = q + r * d;
      const T* kh = k + (bh / p.kv_group) * n * d;
      const T* vh = v + (bh / p.kv_group) * n * d;
      row_scores<T>(p, slots, qi, kh, i, s.data(), nullptr, nullptr);
      T m = s[0];  // slot 0 (key i itself) is always visible
      for (int64_t j = 1; j < S; ++j) m = std::max(m, s[j]);
      T sum = 0;
      for (int64_t j = 0; j < S; ++j) {
        s[j] = std::exp(s[j] - m);  // exp(-inf) == 0 for invisible slots
        sum += s[j];
      }
      std::fill(acc.begin(), acc.end(), T(0));
      const int64_t nw = std::min<int64_t>(ws, i + 1);
      for (int64_t w = 0; w < nw; ++w) axpy(s[w], vh + (i - w) * d, acc.data(), d);
      for (size_t kk = 0; kk < slots.size(); ++kk) {
        const auto& o = slots[kk];
        const T pk = s[ws + static_cast<int64_t>(kk)];
        if (pk == 0) continue;
        axpy(pk * (1 - o.frac), vh + (i - o.lo) * d, acc.data(), d);
        if (o.frac > 0) axpy(pk * o.frac, vh + (i - o.lo - 1) * d, acc.data(), d);
      }
      const T inv = 1 / sum;
      T* oi = out + r * d;
      for (int64_t t = 0; t < d; ++t) oi[t] = acc[static_cast<size_t>(t)] * inv;
      lse[r] = m + std::log(sum);
    }
  }
}

template <typename T>
void dilated_attention_backward_cpu(const DilatedAttentionParams& p, const T* q, const T* k,
                                    const T* v, const T* /*out*/, const T* lse, const T* grad_out,
                                    T* grad_q, T* grad_k, T* grad_v, double* grad_offsets) {
  check(p);
  const int64_t n = p.seq_len, d = p.head_dim, ws = p.window_slots(), S = p.slots();
  const int64_t K = p.num_offsets;
  const auto slots = offset_slots<T>(p);
  const T scale = static_cast<T>(p.scale);
  const int64_t G = p.kv_group;
  // Per-row slot probabilities and score gradients of the G query heads that share one K/V
  // head: O(G * n * (W + K)).
  std::vector<T> prob(static_cast<size_t>(G * n * S));
  std::vector<T> dscore(static_cast<size_t>(G * n * S));
  if (grad_offsets) std::fill(grad_offsets, grad_offsets + K, 0.0);

  for (int64_t kvh = 0; kvh < p.kv_batch_heads(); ++kvh) {
    const T* kh = k + kvh * n * d;
    const T* vh = v + kvh * n * d;
    T* dkh = grad_k + kvh * n * d;
    T* dvh = grad_v + kvh * n * d;
    for (int64_t g = 0; g < G; ++g) {
      const int64_t bh = kvh * G + g;
      const T* qh = q + bh * n * d;
      const T* doh = grad_out + bh * n * d;
      const T* lseh = lse + bh * n;
      T* dqh = grad_q + bh * n * d;
      T* prob_g = prob.data() + g * n * S;
      T* dscore_g = dscore.data() + g * n * S;

      // Pass 1, query-centric: P, dS and dq per row; dLoss/dx_k per thread.
#pragma omp parallel
      {
        std::vector<T> s(static_cast<size_t>(S)), dp(static_cast<size_t>(S));
        std::vector<T> qk_lo(static_cast<size_t>(K)), qk_hi(static_cast<size_t>(K));
        std::vector<double> g_local(static_cast<size_t>(grad_offsets ? K : 0), 0.0);
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n; ++i) {
          const T* qi = qh + i * d;
          const T* doi = doh + i * d;
          row_scores<T>(p, slots, qi, kh, i, s.data(), qk_lo.data(), qk_hi.data());
          const int64_t nw = std::min<int64_t>(ws, i + 1);
          T di = 0;
          for (int64_t w = 0; w < nw; ++w) {
            s[w] = std::exp(s[w] - lseh[i]);
            dp[w] = dot(doi, vh + (i - w) * d, d);
            di += s[w] * dp[w];
          }
          for (int64_t w = nw; w < ws; ++w) s[w] = dp[w] = 0;
          for (int64_t kk = 0; kk < K; ++kk) {
            const auto& o = slots[static_cast<size_t>(kk)];
            const int64_t j = ws + kk;
            if (i < o.min_query) {
              s[j] = dp[j] = 0;
              continue;
            }
            s[j] = std::exp(s[j] - lseh[i]);
            T dpv = (1 - o.frac) * dot(doi, vh + (i - o.lo) * d, d);
            if (o.frac > 0) dpv += o.frac * dot(doi, vh + (i - o.lo - 1) * d, d);
            dp[j] = dpv;
            di += s[j] * dpv;
          }
          T* pi = prob_g + i * S;
          T* dsi = dscore_g + i * S;
          T* dqi = dqh + i * d;
          std::fill(dqi, dqi + d, T(0));
          for (int64_t w = 0; w < ws; ++w) {
            pi[w] = s[w];
            dsi[w] = s[w] * (dp[w] - di);
            if (w < nw) axpy(dsi[w] * scale, kh + (i - w) * d, dqi, d);
          }
          for (int64_t kk = 0; kk < K; ++kk) {
            const auto& o = slots[static_cast<size_t>(kk)];
            const int64_t j = ws + kk;
            pi[j] = s[j];
            dsi[j] = s[j] * (dp[j] - di);
            if (i < o.min_query) continue;
            axpy(dsi[j] * scale * (1 - o.frac), kh + (i - o.lo) * d, dqi, d);
            if (o.frac > 0) axpy(dsi[j] * scale * o.frac, kh + (i - o.lo - 1) * d, dqi, d);
            if (grad_offsets && i - o.lo - 1 >= 0) {
              // d score / dx = scale * q . (k_hi - k_lo); d out / dx = p * (v_hi - v_lo).
              const T* k_hi = kh + (i - o.lo - 1) * d;
              const T* v_hi = vh + (i - o.lo - 1) * d;
              const T* v_lo = vh + (i - o.lo) * d;
              const T qhi = o.frac > 0 ? qk_hi[static_cast<size_t>(kk)] : dot(qi, k_hi, d);
              const T dscore_dx = scale * (qhi - qk_lo[static_cast<size_t>(kk)]);
              const T dov = dot(doi, v_hi, d) - dot(doi, v_lo, d);
              g_local[static_cast<size_t>(kk)] +=
                  static_cast<double>(dsi[j] * dscore_dx) + static_cast<double>(s[j] * dov);
            }
          }
        }
        if (grad_offsets) {
#pragma omp critical
          for (int64_t kk = 0; kk < K; ++kk) grad_offsets[kk] += g_local[static_cast<size_t>(kk)];
        }
      }
    }

    // Pass 2, key-centric: each key gathers the (query head, query, slot) triples that saw
    // it, over the G query heads of its group (one writer per key: no races, no expansion).
#pragma omp parallel
    {
      std::vector<T> dk_acc(static_cast<size_t>(d)), dv_acc(static_cast<size_t>(d));
#pragma omp for schedule(static)
      for (int64_t j = 0; j < n; ++j) {
        std::fill(dk_acc.begin(), dk_acc.end(), T(0));
        std::fill(dv_acc.begin(), dv_acc.end(), T(0));
        for (int64_t g = 0; g < G; ++g) {
          const T* qh = q + (kvh * G + g) * n * d;
          const T* doh = grad_out + (kvh * G + g) * n * d;
          const T* prob_g = prob.data() + g * n * S;
          const T* dscore_g = dscore.data() + g * n * S;
          const int64_t nw = std::min<int64_t>(ws, n - j);
          for (int64_t w = 0; w < nw; ++w) {
            const int64_t i = j + w;
            axpy(dscore_g[i * S + w], qh + i * d, dk_acc.data(), d);
            axpy(prob_g[i * S + w], doh + i * d, dv_acc.data(), d);
          }
          for (int64_t kk = 0; kk < K; ++kk) {
            const auto& o = slots[static_cast<size_t>(kk)];
            const int64_t slot = ws + kk;
            const int64_t i_lo = j + o.lo;  // query for which key j is the floor end
            if (i_lo < n) {
              const T wgt = 1 - o.frac;
              axpy(wgt * dscore_g[i_lo * S + slot], qh + i_lo * d, dk_acc.data(), d);
              axpy(wgt * prob_g[i_lo * S + slot], doh + i_lo * d, dv_acc.data(), d);
            }
            const int64_t i_hi = j + o.lo + 1;  // query for which key j is the ceil end
            if (o.frac > 0 && i_hi < n) {
              axpy(o.frac * dscore_g[i_hi * S + slot], qh + i_hi * d, dk_acc.data(), d);
              axpy(o.frac * prob_g[i_hi * S + slot], doh + i_hi * d, dv_acc.data(), d);
            }
          }
        }
        T* dkj = dkh + j * d;
        T* dvj = dvh + j * d;
        for (int64_t t = 0; t < d; ++t) {
          dkj[t] = scale * dk_acc[static_cast<size_t>(t)];
          dvj[t] = dv_acc[static_cast<size_t>(t)];
        }
      }
    }
  }
}

template void dilated_attention_forward_cpu<float>(const DilatedAttentionParams&, const float*,
                                                   const float*, const float*, float*, float*);
template void dilated_attention_forward_cpu<double>(const DilatedAttentionParams&, const double*,
                                                    const double*, const double*, double*, double*);
template void dilated_attention_backward_cpu<float>(const DilatedAttentionParams&, const float*,
                                                    const float*, const float*, const float*,
                                                    const float*, const float*, float*, float*,
                                                    float*, double*);
template void dilated_attention_backward_cpu<double>(const DilatedAttentionParams&, const double*,
                                                     const double*, const double*, const double*,
                                                     const double*, const double*, double*, double*,
                                                     double*, double*);

}  // namespace reach::kernels
