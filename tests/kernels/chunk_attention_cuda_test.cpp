// CUDA chunk-attention kernels versus the float64 CPU reference; skips cleanly without a GPU.
// Error rule: see tests/kernels/chunk_attention_cuda_cases.hpp.
#include <gtest/gtest.h>

#include "tests/kernels/chunk_attention_cuda_cases.hpp"

namespace reach::tests {
namespace {

TEST(ChunkAttentionCuda, MatchesFloat64ReferenceOnRandomInputs) {
  if (!chunk_cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  unsigned seed = 77;
  for (const auto& c : chunk_cuda_cases()) {
    const auto r = run_chunk_cuda_case(c, seed++);
    SCOPED_TRACE(r.name);
    ASSERT_TRUE(r.error.empty()) << r.error;
    EXPECT_TRUE(r.all_written);
    EXPECT_EQ(r.index_mismatches, 0);
    for (int i = 0; i < 6; ++i) EXPECT_LE(r.err[i], r.bound[i]) << "tensor " << i;
  }
}

}  // namespace
}  // namespace reach::tests
