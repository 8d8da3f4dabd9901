#include <cuda_runtime.h>

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

}  // namespace

void column_sums_cuda(int64_t rows, int64_t cols, const float* in, float* out, void* stream) {
  if (rows < 1 || cols < 1) {
    throw std::invalid_argument("column_sums: rows and cols must be >= 1, got " +
                                std::to_string(rows) + " x " + std::to_string(cols));
  }
  if (in == nullptr || out == nullptr) {
    throw std::invalid_argument("column_sums: in and out must be given");
  }
  const int64_t blocks = (cols + kCols - 1) / kCols;
  if (blocks > 0x7fffffff) throw std::invalid_argument("column_sums: too many columns");
  column_sums_kernel<<<static_cast<unsigned>(blocks), dim3(kCols, kLanes), 0,
                       static_cast<cudaStream_t>(stream)>>>(rows, cols, in, out);
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) {
    throw std::runtime_error(std::string("column_sums: kernel launch failed: ") +
                             cudaGetErrorString(error));
  }
}

}  // namespace reach::kernels::gpu
