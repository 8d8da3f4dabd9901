// run.threads reaches OpenBLAS as well as LibTorch (docs/chunk_attention.md, "Training speed on
// the CPU": OpenBLAS's own pool of spinning threads slowed 1-thread runs on a shared machine).
#include "train/cpu_threads.hpp"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <thread>

namespace reach::train {
namespace {

TEST(CpuThreads, SetsLibTorchAndOpenBlas) {
  const int before = torch::get_num_threads();
  // A matrix product first, so that the BLAS LibTorch uses is loaded and initialised.
  (void)torch::matmul(torch::ones({64, 64}), torch::ones({64, 64}));
  if (openblas_threads() == 0) GTEST_SKIP() << "this LibTorch does not run on OpenBLAS";
  EXPECT_EQ(set_cpu_threads(1), 1);
  EXPECT_EQ(torch::get_num_threads(), 1);
  EXPECT_EQ(openblas_threads(), 1);
  const int all = static_cast<int>(std::thread::hardware_concurrency());
  EXPECT_EQ(set_cpu_threads(0), all);
  EXPECT_EQ(torch::get_num_threads(), all);
  EXPECT_EQ(openblas_threads(), all);
  set_cpu_threads(before);
}

}  // namespace
}  // namespace reach::train
