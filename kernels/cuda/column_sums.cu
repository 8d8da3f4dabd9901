#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda/column_sums.hpp"

namespace reach::kernels::gpu {
namespace {

// A block is 32 columns x 8 row lanes: lane y sums rows y, y + 8, ... of its column (independent
// loads, coalesced across the warp's 32 columns), then lane 0 adds the 8 lanes' sums in order.
constexpr int kCols = 32;
constexpr int kLanes = 8;

__global__ void __launch_bounds__(kCols* kLanes)
    column_sums_kernel(int64_t rows, int64_t cols, const float* __restrict__ in,
                       float* __restrict__ out) {
  __shared__ double lane_sums[kLanes][kCols];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kCols + threadIdx.x;
  double sum = 0.0;
  if (c < cols) {
#pragma unroll 8
    for (int64_t r = threadIdx.y; r < rows; r += kLanes) sum += __ldg(in + r * cols + c);
  }
  lane_sums[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    double total = 0.0;
#pragma unroll
    for (int l = 0; l < kLanes; ++l) total += lane_sums[l][threadIdx.x];
    out[c] = static_cast<float>(total);
  }
}

// Rows one group of the bf16 pass sums (8 lanes x 32 rows), and the most groups (grid.y).
constexpr int64_t kGroupRows = 256;
constexpr int64_t kMaxGroups = 65535;

// Pass 1 of the bf16 sums: block (blockIdx.x column tile, blockIdx.y row group) writes the float32
// sums of its rows (y, y + 8, ... of the group's stride) for its kCols * kPer columns.
template <int kPer>
__global__ void __launch_bounds__(kCols* kLanes)
    column_partials_bf16_kernel(int64_t rows, int64_t cols, const __nv_bfloat16* __restrict__ in,
                                float* __restrict__ partial) {
  constexpr int kTile = kCols * kPer;
  __shared__ float lane_sums[kLanes][kTile];
  const int64_t c0 = (static_cast<int64_t>(blockIdx.x) * kCols + threadIdx.x) * kPer;
  float acc[kPer];
#pragma unroll
  for (int k = 0; k < kPer; ++k) acc[k] = 0.0f;
  if (c0 < cols) {  // (kPer 8: cols % 8 == 0, so a thread's columns are all in)
    const int64_t step = static_cast<int64_t>(gridDim.y) * kLanes;
#pragma unroll 4
    for (int64_t r = static_cast<int64_t>(blockIdx.y) * kLanes + threadIdx.y; r < rows; r += step) {
      const __nv_bfloat16* row = in + r * cols + c0;
      if constexpr (kPer == 8) {
        const uint4 u = __ldg(reinterpret_cast<const uint4*>(row));
        const uint32_t words[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int w = 0; w < 4; ++w) {
          acc[2 * w] += __uint_as_float(words[w] << 16);
          acc[2 * w + 1] += __uint_as_float(words[w] & 0xffff0000u);
        }
      } else {
        acc[0] += __bfloat162float(row[0]);
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kPer; ++k) lane_sums[threadIdx.y][threadIdx.x * kPer + k] = acc[k];
  __syncthreads();
  const int t = static_cast<int>(threadIdx.y) * kCols + static_cast<int>(threadIdx.x);
  for (int j = t; j < kTile; j += kCols * kLanes) {
    const int64_t c = static_cast<int64_t>(blockIdx.x) * kTile + j;
    if (c >= cols) break;
    float sum = 0.0f;
#pragma unroll
    for (int l = 0; l < kLanes; ++l) sum += lane_sums[l][j];
    partial[static_cast<int64_t>(blockIdx.y) * cols + c] = sum;
  }
}

void check_launch() {
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) {
    throw std::runtime_error(std::string("column_sums: kernel launch failed: ") +
                             cudaGetErrorString(error));
  }
}

void check_shape(int64_t rows, int64_t cols) {
  if (rows < 1 || cols < 1) {
    throw std::invalid_argument("column_sums: rows and cols must be >= 1, got " +
                                std::to_string(rows) + " x " + std::to_string(cols));
  }
}

}  // namespace

int64_t column_sums_bf16_workspace_rows(int64_t rows) {
  check_shape(rows, 1);
  return std::min((rows + kGroupRows - 1) / kGroupRows, kMaxGroups);
}

void column_sums_bf16_cuda(int64_t rows, int64_t cols, const void* in, float* workspace, float* out,
                           void* stream) {
  check_shape(rows, cols);
  if (in == nullptr || workspace == nullptr || out == nullptr) {
    throw std::invalid_argument("column_sums: in, workspace and out must be given");
  }
  const auto s = static_cast<cudaStream_t>(stream);
  const int64_t groups = column_sums_bf16_workspace_rows(rows);
  const bool fast = cols % 8 == 0 && reinterpret_cast<uintptr_t>(in) % 16 == 0;
  const int64_t tiles = (cols + kCols * (fast ? 8 : 1) - 1) / (kCols * (fast ? 8 : 1));
  if (tiles > 0x7fffffff) throw std::invalid_argument("column_sums: too many columns");
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(groups));
  const auto* src = static_cast<const __nv_bfloat16*>(in);
  if (fast) {
    column_partials_bf16_kernel<8><<<grid, dim3(kCols, kLanes), 0, s>>>(rows, cols, src, workspace);
  } else {
    column_partials_bf16_kernel<1><<<grid, dim3(kCols, kLanes), 0, s>>>(rows, cols, src, workspace);
  }
  check_launch();
  column_sums_cuda(groups, cols, workspace, out, stream);
}

void column_sums_cuda(int64_t rows, int64_t cols, const float* in, float* out, void* stream) {
  check_shape(rows, cols);
  if (in == nullptr || out == nullptr) {
    throw std::invalid_argument("column_sums: in and out must be given");
  }
  const int64_t blocks = (cols + kCols - 1) / kCols;
  if (blocks > 0x7fffffff) throw std::invalid_argument("column_sums: too many columns");
  column_sums_kernel<<<static_cast<unsigned>(blocks), dim3(kCols, kLanes), 0,
                       static_cast<cudaStream_t>(stream)>>>(rows, cols, in, out);
  check_launch();
}

}  // namespace reach::kernels::gpu
