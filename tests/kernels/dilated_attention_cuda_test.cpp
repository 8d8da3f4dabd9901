// CUDA kernels versus the float64 CPU reference; skips cleanly without a GPU.
// Error rule: see tests/kernels/dilated_attention_cuda_cases.hpp.
#include <gtest/gtest.h>

#include "tests/kernels/dilated_attention_cuda_cases.hpp"

namespace reach::tests {
namespace {

TEST(DilatedAttentionCuda, MatchesFloat64ReferenceOnRandomInputs) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  unsigned seed = 99;
  for (const auto& c : cuda_cases()) {
    const auto r = run_cuda_case(c, seed++);
    SCOPED_TRACE(r.name);
    ASSERT_TRUE(r.error.empty()) << r.error;
    EXPECT_TRUE(r.all_written);
    EXPECT_LE(r.err_out, r.bound_out);
    EXPECT_LE(r.err_dq, r.bound_dq);
    EXPECT_LE(r.err_dk, r.bound_dk);
    EXPECT_LE(r.err_dv, r.bound_dv);
    EXPECT_LE(r.err_doff, r.bound_doff);
  }
}

}  // namespace
}  // namespace reach::tests
