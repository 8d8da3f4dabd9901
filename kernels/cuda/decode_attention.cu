#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/cuda/decode_attention.hpp"

namespace reach::kernels::gpu {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kSlots = static_cast<int>(kDecodeSlotsPerBlock);
constexpr int kHeads = static_cast<int>(kDecodeHeadsPerBlock);
constexpr int kMaxOffsets = static_cast<int>(kDecodeMaxOffsets);

// What a launch reads besides the tensors, by value (offsets as int32: integer distances).
struct Launch {
  int64_t batch, heads, kv_heads, queries, capacity;
  int head_dim, group, head_groups, splits;
  int max_length, window, max_window, num_offsets;
  float scale;
  const int32_t* lengths;
  const int32_t* windows;
  const int32_t* rung_limits;
  const double* alibi_slopes;
  const double* delta;
  const double* beta;
  const double* gamma;
  int offsets[kMaxOffsets];
};

// One query's key set: its position t, its window slots, and its visible offsets, the
// contiguous run first_offset .. first_offset + offset_slots - 1 of the offset list (offsets
// ascend, so "x_k >= W_b" cuts a prefix and "k < K_b, x_k <= t" a suffix).
struct QuerySlots {
  int t, window_slots, first_offset, offset_slots;
  bool valid;
  __device__ int count() const { return window_slots + offset_slots; }
};

__device__ QuerySlots query_slots(const Launch& L, const int* offsets, int64_t b, int i) {
  QuerySlots s{0, 0, 0, 0, false};
  const int length = L.lengths[b];
  const int window = L.windows ? L.windows[b] : L.window;
  const int rungs = L.rung_limits ? L.rung_limits[b] : L.num_offsets;
  if (length < L.queries || length > L.max_length || window < 1 || window > L.max_window ||
      rungs < 0 || rungs > L.num_offsets) {
    return s;
  }
  s.t = length - static_cast<int>(L.queries) + i;
  s.window_slots = min(window, s.t + 1);
  int k = 0;
  while (k < rungs && offsets[k] < window) ++k;
  s.first_offset = k;
  while (k < rungs && offsets[k] <= s.t) ++k;
  s.offset_slots = k - s.first_offset;
  s.valid = true;
  return s;
}

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}

// 16 bytes of a row as floats: 4 fp32 or 8 bf16 values.
template <typename T>
constexpr int kVector = 16 / static_cast<int>(sizeof(T));

__device__ __forceinline__ void load16(const float* p, float (&r)[4]) {
  const float4 x = *reinterpret_cast<const float4*>(p);
  r[0] = x.x;
  r[1] = x.y;
  r[2] = x.z;
  r[3] = x.w;
}

__device__ __forceinline__ void load16(const __nv_bfloat16* p, float (&r)[8]) {
  const uint4 x = *reinterpret_cast<const uint4*>(p);
  const unsigned words[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    __nv_bfloat162 pair;
    memcpy(&pair, &words[u], sizeof(pair));
    const float2 f = __bfloat1622float2(pair);
    r[2 * u] = f.x;
    r[2 * u + 1] = f.y;
  }
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Row of q and out for (request b, head h, query i).
__device__ __forceinline__ int64_t query_row(const Launch& L, int64_t b, int64_t h, int64_t i) {
  return (b * L.heads + h) * L.queries + i;
}

// Shared memory of the scoring kernel, in floats: scaled queries [kHeads][d], probabilities
// [kHeads][kSlots], key rows [kSlots] (int32), per-warp value sums [kWarps][kHeads][d].
size_t score_shared_bytes(int head_dim) {
  return sizeof(float) * (static_cast<size_t>(kHeads) * head_dim * (1 + kWarps) +
                          static_cast<size_t>(kHeads) * kSlots + kSlots);
}

// One block: up to kSlots slots (split `split` of the query's) of query i of request b, for the
// query heads kv_head * group + head_group * kHeads + j, j < kHeads. kElems: ceil(d / 32)
// rounded up (each lane's share of a value row); kVectorKeys: rows are 16-byte aligned and d
// is a multiple of kVector<T>, so a thread reads its key row in 16-byte loads.
template <typename T, int kElems, bool kVectorKeys>
__global__ void __launch_bounds__(kThreads, 4)
    decode_kernel(const Launch L, const T* __restrict__ q, const T* __restrict__ k_cache,
                  const T* __restrict__ v_cache, T* __restrict__ out, float* __restrict__ partial) {
  extern __shared__ float shared[];
  __shared__ int s_offsets[kMaxOffsets];
  __shared__ float s_multiplier[kHeads], s_slope[kHeads], s_max[kHeads], s_sum[kHeads];
  const int d = L.head_dim;
  float* s_q = shared;                                         // [kHeads][d]
  float* s_p = s_q + kHeads * d;                               // [kHeads][kSlots]
  int* s_row = reinterpret_cast<int*>(s_p + kHeads * kSlots);  // [kSlots]
  float* s_acc = reinterpret_cast<float*>(s_row + kSlots);     // [kWarps][kHeads][d]

  int64_t id = blockIdx.x;
  const int split = static_cast<int>(id % L.splits);
  id /= L.splits;
  const int head_group = static_cast<int>(id % L.head_groups);
  id /= L.head_groups;
  const int64_t kv_head = id % L.kv_heads;
  id /= L.kv_heads;
  const int i = static_cast<int>(id % L.queries);
  const int64_t b = id / L.queries;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;

  for (int k = tid; k < L.num_offsets; k += kThreads) s_offsets[k] = L.offsets[k];
  __syncthreads();
  const QuerySlots s = query_slots(L, s_offsets, b, i);
  const int64_t first_head = kv_head * L.group + static_cast<int64_t>(head_group) * kHeads;
  const int heads = min(kHeads, L.group - head_group * kHeads);
  if (!s.valid) {
    // A device value outside its contract: NaN rows, not some other key set's output.
    if (split == 0) {
      for (int e = tid; e < heads * d; e += kThreads) {
        out[query_row(L, b, first_head + e / d, i) * d + e % d] =
            from_float<T>(__int_as_float(0x7fc00000));
      }
    }
    return;
  }
  const int slots = s.count();
  const int begin = split * kSlots;
  if (begin >= slots) return;  // this query has fewer splits than the longest
  const int count = min(kSlots, slots - begin);
  const int splits_here = (slots + kSlots - 1) / kSlots;

  if (tid < heads) {
    const int64_t h = first_head + tid;
    // float32 like the scores it multiplies (the CPU kernel's float64 differs by ~1e-7).
    float c = 1.f;
    if (L.delta) {
      c = static_cast<float>(L.delta[h]) +
          static_cast<float>(L.beta[h]) *
              powf(logf(static_cast<float>(slots) + 1.f), static_cast<float>(L.gamma[h]));
    }
    s_multiplier[tid] = c * L.scale;
    s_slope[tid] = L.alibi_slopes ? static_cast<float>(L.alibi_slopes[h]) : 0.f;
  }
  for (int u = tid; u < count; u += kThreads) {
    const int slot = begin + u;
    s_row[u] = slot < s.window_slots ? s.t - slot
                                     : s.t - s_offsets[s.first_offset + slot - s.window_slots];
  }
  __syncthreads();
  for (int e = tid; e < kHeads * d; e += kThreads) {
    const int j = e / d;
    s_q[e] = j < heads
                 ? to_float(q[query_row(L, b, first_head + j, i) * d + e % d]) * s_multiplier[j]
                 : 0.f;
  }
  __syncthreads();

  // Scores: a thread per slot, its key row read once for every head of the block.
  const int64_t cache_base = (b * L.kv_heads + kv_head) * L.capacity * d;
  const T* keys = k_cache + cache_base;
  const T* values = v_cache + cache_base;
  for (int u = tid; u < count; u += kThreads) {
    const T* key = keys + static_cast<int64_t>(s_row[u]) * d;
    float dot[kHeads];
#pragma unroll
    for (int j = 0; j < kHeads; ++j) dot[j] = 0.f;
    if constexpr (kVectorKeys) {
      constexpr int V = kVector<T>;
      for (int c = 0; c < d; c += V) {
        float x[V];
        load16(key + c, x);
#pragma unroll
        for (int v = 0; v < V; ++v) {
#pragma unroll
          for (int j = 0; j < kHeads; ++j) dot[j] += s_q[j * d + c + v] * x[v];
        }
      }
    } else {
      for (int c = 0; c < d; ++c) {
        const float x = to_float(key[c]);
#pragma unroll
        for (int j = 0; j < kHeads; ++j) dot[j] += s_q[j * d + c] * x;
      }
    }
    const int slot = begin + u;
    const float distance =
        slot < s.window_slots
            ? static_cast<float>(slot)
            : static_cast<float>(s_offsets[s.first_offset + slot - s.window_slots]);
#pragma unroll
    for (int j = 0; j < kHeads; ++j) {
      if (j < heads) s_p[j * kSlots + u] = dot[j] - s_slope[j] * distance;
    }
  }
  __syncthreads();

  // Softmax over this block's slots: a warp per head.
  for (int j = warp; j < heads; j += kWarps) {
    float* p = s_p + j * kSlots;
    float m = -INFINITY;
    for (int u = lane; u < count; u += 32) m = fmaxf(m, p[u]);
    m = warp_max(m);
    float l = 0.f;
    for (int u = lane; u < count; u += 32) {
      const float e = expf(p[u] - m);
      p[u] = e;
      l += e;
    }
    l = warp_sum(l);
    if (lane == 0) {
      s_max[j] = m;
      s_sum[j] = l;
    }
  }
  __syncthreads();

  // Values: warp w sums slots w, w + kWarps, ...; lane covers elements lane + 32 e.
  float acc[kHeads][kElems];
#pragma unroll
  for (int j = 0; j < kHeads; ++j) {
#pragma unroll
    for (int e = 0; e < kElems; ++e) acc[j][e] = 0.f;
  }
  for (int u = warp; u < count; u += kWarps) {
    const T* value = values + static_cast<int64_t>(s_row[u]) * d;
    float x[kElems];
#pragma unroll
    for (int e = 0; e < kElems; ++e) {
      const int c = lane + 32 * e;
      x[e] = c < d ? to_float(value[c]) : 0.f;
    }
#pragma unroll
    for (int j = 0; j < kHeads; ++j) {
      const float p = j < heads ? s_p[j * kSlots + u] : 0.f;
#pragma unroll
      for (int e = 0; e < kElems; ++e) acc[j][e] += p * x[e];
    }
  }
#pragma unroll
  for (int j = 0; j < kHeads; ++j) {
#pragma unroll
    for (int e = 0; e < kElems; ++e) {
      const int c = lane + 32 * e;
      if (j < heads && c < d) s_acc[(warp * kHeads + j) * d + c] = acc[j][e];
    }
  }
  __syncthreads();
  for (int e = tid; e < heads * d; e += kThreads) {
    const int j = e / d, c = e % d;
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sum += s_acc[(w * kHeads + j) * d + c];
    const int64_t row = query_row(L, b, first_head + j, i);
    if (splits_here == 1) {
      out[row * d + c] = from_float<T>(sum / s_sum[j]);
    } else {
      float* part = partial + (row * L.splits + split) * (d + 2);
      part[c] = sum;
      if (c == 0) {
        part[d] = s_max[j];
        part[d + 1] = s_sum[j];
      }
    }
  }
}

// Merges the splits of one query row (b, h, i): out = sum_s acc_s e^(m_s - M) / sum_s l_s
// e^(m_s - M), M the largest partial maximum. Rows of one split were finished by the first
// kernel.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    combine_kernel(const Launch L, const float* __restrict__ partial, T* __restrict__ out) {
  __shared__ int s_offsets[kMaxOffsets];
  const int64_t row = blockIdx.x;
  const int i = static_cast<int>(row % L.queries);
  const int64_t b = row / L.queries / L.heads;
  for (int k = threadIdx.x; k < L.num_offsets; k += kThreads) s_offsets[k] = L.offsets[k];
  __syncthreads();
  const QuerySlots s = query_slots(L, s_offsets, b, i);
  if (!s.valid) return;
  const int splits = (s.count() + kSlots - 1) / kSlots;
  if (splits == 1) return;
  const int d = L.head_dim;
  const float* base = partial + row * L.splits * (d + 2);
  float m = -INFINITY;
  for (int t = 0; t < splits; ++t) m = fmaxf(m, base[t * (d + 2) + d]);
  float l = 0.f;
  for (int t = 0; t < splits; ++t) {
    l += base[t * (d + 2) + d + 1] * expf(base[t * (d + 2) + d] - m);
  }
  for (int c = threadIdx.x; c < d; c += kThreads) {
    float sum = 0.f;
    for (int t = 0; t < splits; ++t) {
      sum += base[t * (d + 2) + c] * expf(base[t * (d + 2) + d] - m);
    }
    out[row * d + c] = from_float<T>(sum / l);
  }
}

void check_launch(const char* what) {
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) {
    throw std::runtime_error(std::string("decode attention (CUDA): ") + what +
                             " launch failed: " + cudaGetErrorString(error));
  }
}

template <typename T, int kElems, bool kVectorKeys>
void launch(const Launch& L, int64_t blocks, const void* q, const void* k, const void* v, void* out,
            void* workspace, cudaStream_t stream) {
  const auto kernel = decode_kernel<T, kElems, kVectorKeys>;
  const size_t shared = score_shared_bytes(L.head_dim);
  if (shared > 48 * 1024) {
    const cudaError_t error = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared));
    if (error != cudaSuccess) {
      throw std::runtime_error(std::string("decode attention (CUDA): shared memory: ") +
                               cudaGetErrorString(error));
    }
  }
  kernel<<<static_cast<unsigned>(blocks), kThreads, shared, stream>>>(
      L, static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
      static_cast<T*>(out), static_cast<float*>(workspace));
  check_launch("scoring");
  if (L.splits > 1) {
    combine_kernel<T>
        <<<static_cast<unsigned>(L.batch * L.heads * L.queries), kThreads, 0, stream>>>(
            L, static_cast<const float*>(workspace), static_cast<T*>(out));
    check_launch("split merge");
  }
}

template <typename T>
void launch_type(const Launch& L, int64_t blocks, bool vector_keys, const void* q, const void* k,
                 const void* v, void* out, void* workspace, cudaStream_t stream) {
#define REACH_DECODE_LAUNCH(E)                                                  \
  (vector_keys ? launch<T, E, true>(L, blocks, q, k, v, out, workspace, stream) \
               : launch<T, E, false>(L, blocks, q, k, v, out, workspace, stream))
  if (L.head_dim <= 64) {
    REACH_DECODE_LAUNCH(2);
  } else if (L.head_dim <= 128) {
    REACH_DECODE_LAUNCH(4);
  } else {
    REACH_DECODE_LAUNCH(8);
  }
#undef REACH_DECODE_LAUNCH
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

std::string decode_cuda_support_problem(const DecodeAttentionCudaArgs& a) {
  constexpr int64_t kMaxInt = std::numeric_limits<int32_t>::max();
  if (a.batch < 1) return "batch (requests) must be >= 1, got " + std::to_string(a.batch);
  if (a.heads < 1) return "heads must be >= 1, got " + std::to_string(a.heads);
  if (a.kv_heads < 1 || a.heads % a.kv_heads != 0) {
    return "kv_heads (" + std::to_string(a.kv_heads) + ") must be >= 1 and divide heads (" +
           std::to_string(a.heads) + ")";
  }
  if (a.head_dim < 1 || a.head_dim > kDecodeMaxHeadDim) {
    return "head_dim must be in 1.." + std::to_string(kDecodeMaxHeadDim) + ", got " +
           std::to_string(a.head_dim);
  }
  if (a.queries < 1) return "queries per request must be >= 1, got " + std::to_string(a.queries);
  if (a.capacity < 1 || a.capacity > kMaxInt) {
    return "cache capacity must be in 1..2^31 - 1, got " + std::to_string(a.capacity);
  }
  if (a.lengths == nullptr) return "lengths pointer is null";
  if (a.max_length < a.queries || a.max_length > a.capacity) {
    return "max_length (" + std::to_string(a.max_length) + ") must be in queries (" +
           std::to_string(a.queries) + ")..capacity (" + std::to_string(a.capacity) + ")";
  }
  if (a.window < 1) return "window W must be >= 1, got " + std::to_string(a.window);
  if (a.windows != nullptr && a.max_window < 1) {
    return "per-request windows need max_window, a bound >= every window";
  }
  if (!std::isfinite(a.scale) || a.scale <= 0.0) {
    return "scale must be a positive finite number, got " + std::to_string(a.scale);
  }
  if (a.num_offsets < 0 || a.num_offsets > kDecodeMaxOffsets) {
    return "at most " + std::to_string(kDecodeMaxOffsets) + " offsets, got " +
           std::to_string(a.num_offsets);
  }
  if (a.num_offsets > 0 && a.offsets == nullptr) return "offsets pointer is null";
  for (int64_t k = 0; k < a.num_offsets; ++k) {
    const double x = a.offsets[k];
    if (!std::isfinite(x) || x != std::floor(x)) {
      return "offset " + std::to_string(k) + " (" + std::to_string(x) +
             ") is not an integer: the CUDA decode kernel takes integer offsets (inference "
             "freezes learned schedules to round(alpha * b))";
    }
    if (x < static_cast<double>(a.window) || x > static_cast<double>(kMaxInt)) {
      return "offset " + std::to_string(k) + " (" + std::to_string(x) +
             ") must be in W = " + std::to_string(a.window) + "..2^31 - 1";
    }
    if (k > 0 && !(x > a.offsets[k - 1])) {
      return "offsets must be strictly increasing (offset " + std::to_string(k) + " = " +
             std::to_string(x) + " follows " + std::to_string(a.offsets[k - 1]) + ")";
    }
  }
  if (a.log_n_scaling && (!a.delta || !a.beta || !a.gamma)) {
    return "log-n scaling needs delta, beta and gamma per head";
  }
  if (a.batch * a.heads * a.queries > kMaxInt) {
    return "batch * heads * queries must be < 2^31, got " +
           std::to_string(a.batch * a.heads * a.queries);
  }
  const int64_t group = a.heads / a.kv_heads;
  const int64_t blocks = decode_attention_splits(a) * a.batch * a.kv_heads * a.queries *
                         ((group + kDecodeHeadsPerBlock - 1) / kDecodeHeadsPerBlock);
  if (blocks > kMaxInt) return "too many blocks (" + std::to_string(blocks) + ") for one launch";
  return {};
}

int64_t decode_attention_max_slots(const DecodeAttentionCudaArgs& a) {
  return std::min(a.max_window_or_window(), a.max_length) + a.num_offsets;
}

int64_t decode_attention_splits(const DecodeAttentionCudaArgs& a) {
  return (decode_attention_max_slots(a) + kDecodeSlotsPerBlock - 1) / kDecodeSlotsPerBlock;
}

size_t decode_attention_workspace_bytes(const DecodeAttentionCudaArgs& a) {
  const int64_t splits = decode_attention_splits(a);
  if (splits <= 1) return 0;
  return sizeof(float) * static_cast<size_t>(a.batch * a.heads * a.queries * splits) *
         static_cast<size_t>(a.head_dim + 2);
}

void decode_attention_forward_cuda(const DecodeAttentionCudaArgs& a, ScalarType type, const void* q,
                                   const void* k_cache, const void* v_cache, void* out,
                                   void* workspace, void* stream) {
  constexpr int64_t kMaxInt = std::numeric_limits<int32_t>::max();
  if (const auto problem = decode_cuda_support_problem(a); !problem.empty()) {
    throw std::invalid_argument("decode attention (CUDA): " + problem);
  }
  if (decode_attention_workspace_bytes(a) > 0 && workspace == nullptr) {
    throw std::invalid_argument(
        "decode attention (CUDA): these lengths split a query over several blocks; pass a "
        "workspace of decode_attention_workspace_bytes bytes");
  }
  Launch L{};
  L.batch = a.batch;
  L.heads = a.heads;
  L.kv_heads = a.kv_heads;
  L.queries = a.queries;
  L.capacity = a.capacity;
  L.head_dim = static_cast<int>(a.head_dim);
  L.group = static_cast<int>(a.heads / a.kv_heads);
  L.head_groups = static_cast<int>((L.group + kHeads - 1) / kHeads);
  L.splits = static_cast<int>(decode_attention_splits(a));
  L.max_length = static_cast<int>(a.max_length);
  // A window beyond 2^31 - 1 reads what one of 2^31 - 1 reads (lengths are below it).
  L.window = static_cast<int>(std::min<int64_t>(a.window, kMaxInt));
  L.max_window = static_cast<int>(std::min<int64_t>(a.max_window_or_window(), kMaxInt));
  L.num_offsets = static_cast<int>(a.num_offsets);
  L.scale = static_cast<float>(a.scale);
  L.lengths = a.lengths;
  L.windows = a.windows;
  L.rung_limits = a.rung_limits;
  L.alibi_slopes = a.alibi_slopes;
  L.delta = a.log_n_scaling ? a.delta : nullptr;
  L.beta = a.log_n_scaling ? a.beta : nullptr;
  L.gamma = a.log_n_scaling ? a.gamma : nullptr;
  for (int64_t k = 0; k < a.num_offsets; ++k) L.offsets[k] = static_cast<int>(a.offsets[k]);
  const int64_t blocks = L.splits * a.batch * a.kv_heads * a.queries * L.head_groups;
  const size_t element = type == ScalarType::kBFloat16 ? 2 : 4;
  const bool vector_keys =
      (a.head_dim * static_cast<int64_t>(element)) % 16 == 0 && aligned16(k_cache);
  const auto s = static_cast<cudaStream_t>(stream);
  if (type == ScalarType::kBFloat16) {
    launch_type<__nv_bfloat16>(L, blocks, vector_keys, q, k_cache, v_cache, out, workspace, s);
  } else {
    launch_type<float>(L, blocks, vector_keys, q, k_cache, v_cache, out, workspace, s);
  }
}

}  // namespace reach::kernels::gpu
