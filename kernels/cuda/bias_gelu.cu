#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "kernels/cuda/bias_gelu.hpp"
#include "kernels/cuda/bias_gelu_kernels.cuh"

namespace reach::kernels::gpu {
namespace {

using namespace bias_gelu_detail;

// The tuning the launcher uses: the fast erf, one row in flight, at most 64 registers (4 blocks an
// SM): 0.185 / 0.256 ms forward / backward at 65,536 x 2,048 bf16 on the H200 against 0.203 /
// 0.339 for erff with two rows (bench/cuda/bias_gelu_variants.cu, which times the others beside it;
// docs/benchmarks.md has the table).
using Tuning = GeluTuning<1, 4, true>;
bool aligned16(std::initializer_list<const void*> pointers) {
  return std::all_of(pointers.begin(), pointers.end(),
                     [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; });
}

bool fast_cols(int64_t cols) { return cols % kFastCols == 0; }

template <typename T, int kPer>
int forward_blocks_per_sm() {
  static const int n = blocks_per_sm(forward_kernel<T, kPer, Tuning>);
  return n;
}
template <typename T, int kPer>
int backward_blocks_per_sm() {
  static const int n = blocks_per_sm(backward_kernel<T, kPer, Tuning>);
  return n;
}

template <typename T>
int64_t partial_rows(int64_t rows, int64_t cols) {
  if (fast_cols(cols)) {
    return row_groups(rows, tiles(cols, kFastCols), backward_blocks_per_sm<T, kFastCols>(),
                      kMaxPartialRows);
  }
  return row_groups(rows, tiles(cols, 1), backward_blocks_per_sm<T, 1>(), kMaxPartialRows);
}

void check(int64_t rows, int64_t cols, std::initializer_list<const void*> pointers) {
  if (rows < 1 || cols < 1) {
    throw std::invalid_argument("bias_gelu: rows and cols must be >= 1, got " +
                                std::to_string(rows) + " x " + std::to_string(cols));
  }
  if (cols > kMaxBiasGeluCols) {
    throw std::invalid_argument("bias_gelu: at most " + std::to_string(kMaxBiasGeluCols) +
                                " columns, got " + std::to_string(cols));
  }
  if (std::any_of(pointers.begin(), pointers.end(), [](const void* p) { return p == nullptr; })) {
    throw std::invalid_argument("bias_gelu: every pointer must be given");
  }
}

void check_launch(const char* what) {
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) {
    throw std::runtime_error(std::string("bias_gelu: ") + what +
                             " launch failed: " + cudaGetErrorString(error));
  }
}

template <typename T>
void forward(int64_t rows, int64_t cols, const void* h0, const float* bias, void* y,
             cudaStream_t stream) {
  const auto* ht = static_cast<const T*>(h0);
  auto* yt = static_cast<T*>(y);
  const dim3 block(kColThreads, kLanes);
  if (fast_cols(cols) && aligned16({h0, bias, y})) {
    const int64_t t = tiles(cols, kFastCols);
    const auto groups = row_groups(rows, t, forward_blocks_per_sm<T, kFastCols>(), rows);
    const dim3 grid(static_cast<unsigned>(groups), static_cast<unsigned>(t));
    forward_kernel<T, kFastCols, Tuning><<<grid, block, 0, stream>>>(rows, cols, ht, bias, yt);
  } else {
    const int64_t t = tiles(cols, 1);
    const auto groups = row_groups(rows, t, forward_blocks_per_sm<T, 1>(), rows);
    const dim3 grid(static_cast<unsigned>(groups), static_cast<unsigned>(t));
    forward_kernel<T, 1, Tuning><<<grid, block, 0, stream>>>(rows, cols, ht, bias, yt);
  }
  check_launch("forward");
}

template <typename T>
void backward(int64_t rows, int64_t cols, const void* dy, const void* h0, const float* bias,
              void* dh, float* partial, cudaStream_t stream) {
  const auto* gt = static_cast<const T*>(dy);
  const auto* ht = static_cast<const T*>(h0);
  auto* dht = static_cast<T*>(dh);
  const dim3 block(kColThreads, kLanes);
  // The same row groups on both paths: the caller sized partial by partial_rows.
  const auto groups = static_cast<unsigned>(partial_rows<T>(rows, cols));
  if (fast_cols(cols) && aligned16({dy, h0, bias, dh, partial})) {
    const dim3 grid(groups, static_cast<unsigned>(tiles(cols, kFastCols)));
    backward_kernel<T, kFastCols, Tuning>
        <<<grid, block, 0, stream>>>(rows, cols, gt, ht, bias, dht, partial);
  } else {
    const dim3 grid(groups, static_cast<unsigned>(tiles(cols, 1)));
    backward_kernel<T, 1, Tuning>
        <<<grid, block, 0, stream>>>(rows, cols, gt, ht, bias, dht, partial);
  }
  check_launch("backward");
}

}  // namespace

int64_t bias_gelu_backward_partial_rows(int64_t rows, int64_t cols, ScalarType type) {
  check(rows, cols, {});
  return type == ScalarType::kBFloat16 ? partial_rows<__nv_bfloat16>(rows, cols)
                                       : partial_rows<float>(rows, cols);
}

void bias_gelu_forward_cuda(int64_t rows, int64_t cols, ScalarType type, const void* h0,
                            const float* bias, void* y, void* stream) {
  check(rows, cols, {h0, bias, y});
  const auto s = static_cast<cudaStream_t>(stream);
  if (type == ScalarType::kBFloat16) {
    forward<__nv_bfloat16>(rows, cols, h0, bias, y, s);
  } else {
    forward<float>(rows, cols, h0, bias, y, s);
  }
}

void bias_gelu_backward_cuda(int64_t rows, int64_t cols, ScalarType type, const void* dy,
                             const void* h0, const float* bias, void* dh, float* dbias_partial,
                             void* stream) {
  check(rows, cols, {dy, h0, bias, dh, dbias_partial});
  const auto s = static_cast<cudaStream_t>(stream);
  if (type == ScalarType::kBFloat16) {
    backward<__nv_bfloat16>(rows, cols, dy, h0, bias, dh, dbias_partial, s);
  } else {
    backward<float>(rows, cols, dy, h0, bias, dh, dbias_partial, s);
  }
}

}  // namespace reach::kernels::gpu
