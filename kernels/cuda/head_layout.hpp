// Moving attention rows between the heads-first layout [B, H, T, row] (what reach's attention
// kernels read and write) and the token-major layout [B, T, H, row] (what the output projection
// reads as [B, T, H * row]) on a CUDA GPU, in 16-byte pieces: one read and one write of each
// byte, where LibTorch's strided copy (`y.transpose(1, 2).reshape(...)`) ran at ~0.9 TB/s
// (146 us for 64 MiB at 64 x 1024 x 512 bf16, twice per layer and step). A pure permutation,
// so the check is exact equality with the host permutation (tests/kernels/block_ops_cuda_test.cpp).
// Raw device pointers, no torch, no CUDA headers.
#pragma once

#include <cstdint>

namespace reach::kernels::gpu {

struct HeadLayout {
  int64_t batch = 1, heads = 1, seq_len = 1;
  int64_t row_bytes = 16;  // head_dim x element size; a multiple of 16
};

// heads_to_tokens: src [B, H, T, row] -> dst [B, T, H, row]; else the inverse. src and dst
// 16-byte aligned, not overlapping. Throws std::invalid_argument on a bad layout,
// std::runtime_error on a CUDA error.
void permute_heads_cuda(const HeadLayout& layout, bool heads_to_tokens, const void* src, void* dst,
                        void* stream);

}  // namespace reach::kernels::gpu
