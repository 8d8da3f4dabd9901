// Accuracy cases for the CUDA chunk-attention kernels against the float64 CPU reference,
// shared by the GoogleTest suite (CI: skips without a GPU) and the standalone checker run on
// the GPU machine (no gtest there).
//
// Error rule (relative L2, ||x - ref|| / ||ref||, ref in float64 on the same inputs):
//  * float32: out and every gradient within 1e-4. The kernels accumulate at most S * d or
//    k * S terms per element in float32 (eps 6e-8) and the atomics only reorder float32
//    sums, so 1e-4 leaves a wide margin; an indexing or weighting error is O(1e-1).
//  * the bfloat16 tensor-core path (chunk_attention_uses_tensor_cores) has no float atomics:
//    its gradients must also be bitwise identical in a second backward.
//  * bfloat16 (inputs rounded to bf16, ref on the rounded inputs): each output within 2x
//    the error of rounding the float64 result to bf16 (FlashAttention's rule) plus 1e-4.
//  * the selected chunk indices equal the reference's exactly (random inputs keep the
//    landmark scores far apart compared with float32 rounding).
#pragma once

#include <string>
#include <vector>

namespace reach::tests {

struct ChunkCudaCase {
  bool bf16 = false;
  int batch = 1, query_heads = 1, kv_heads = 1, seq_len = 1, head_dim = 64, retrieval_dim = 64;
  int chunk_size = 64, top_k = 8, window = 0;
  bool fraction_budget = false;  // k = clamp(ceil(0.25 C), 2, top_k)
  bool stick_breaking = false;
};

struct ChunkCudaResult {
  std::string name;
  // out, dq, dk, dv, dr, dlandmarks
  double err[6] = {0, 0, 0, 0, 0, 0};
  double bound[6] = {0, 0, 0, 0, 0, 0};
  long index_mismatches = 0;
  bool all_written = true;   // no NaN (poison) left in any output
  bool reproducible = true;  // tensor-core path: a second backward gives identical bits
  bool passed = false;
  std::string error;
};

bool chunk_cuda_device_available();
std::vector<ChunkCudaCase> chunk_cuda_cases();
ChunkCudaResult run_chunk_cuda_case(const ChunkCudaCase& c, unsigned seed);

}  // namespace reach::tests
