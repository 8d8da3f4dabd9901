#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda/head_layout.hpp"

namespace reach::kernels::gpu {
namespace {

// One thread per 16-byte piece; consecutive threads on consecutive pieces of one row, then the
// next head (token-major side contiguous) or the next token (heads-first side contiguous).
__global__ void permute_kernel(const uint4* src, uint4* dst, int64_t batch, int64_t heads,
                               int64_t seq_len, int64_t pieces, bool heads_to_tokens) {
  const int64_t total = batch * heads * seq_len * pieces;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // idx enumerates the destination in order, so the writes are contiguous.
    int64_t rest = idx;
    const int64_t p = rest % pieces;
    rest /= pieces;
    int64_t b, h, t;
    if (heads_to_tokens) {  // dst [B, T, H, row]
      h = rest % heads;
      rest /= heads;
      t = rest % seq_len;
      b = rest / seq_len;
    } else {  // dst [B, H, T, row]
      t = rest % seq_len;
      rest /= seq_len;
      h = rest % heads;
      b = rest / heads;
    }
    const int64_t heads_first = ((b * heads + h) * seq_len + t) * pieces + p;
    const int64_t token_major = ((b * seq_len + t) * heads + h) * pieces + p;
    dst[idx] = heads_to_tokens ? src[heads_first] : src[token_major];
  }
}

}  // namespace

void permute_heads_cuda(const HeadLayout& layout, bool heads_to_tokens, const void* src, void* dst,
                        void* stream) {
  if (layout.batch < 1 || layout.heads < 1 || layout.seq_len < 1 || layout.row_bytes < 16 ||
      layout.row_bytes % 16 != 0) {
    throw std::invalid_argument(
        "permute_heads: batch, heads, seq_len >= 1 and row bytes a multiple of 16, got row bytes " +
        std::to_string(layout.row_bytes));
  }
  if (reinterpret_cast<uintptr_t>(src) % 16 != 0 || reinterpret_cast<uintptr_t>(dst) % 16 != 0) {
    throw std::invalid_argument("permute_heads: src and dst must be 16-byte aligned");
  }
  const int64_t pieces = layout.row_bytes / 16;
  const int64_t total = layout.batch * layout.heads * layout.seq_len * pieces;
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20);
  permute_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const uint4*>(src), static_cast<uint4*>(dst), layout.batch, layout.heads,
      layout.seq_len, pieces, heads_to_tokens);
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) {
    throw std::runtime_error(std::string("permute_heads: kernel launch failed: ") +
                             cudaGetErrorString(error));
  }
}

}  // namespace reach::kernels::gpu
