// Standalone accuracy check of the CUDA chunk-attention kernels (no gtest: the GPU machine has
// none). One line per case and PASS/FAIL; exit status 1 on any failure, 0 with "SKIP" when no
// GPU is present. Build and run (repo root, on the GPU machine):
//   nvcc -std=c++17 -O3 -arch=sm_90 -I. -c kernels/cuda/chunk_attention.cu -o ca.o
//   g++ -std=c++20 -O3 -fopenmp -I. -I$CUDA_HOME/include pattern/chunk_selection.cpp
//     kernels/chunk_attention_params.cpp kernels/cpu/reference_chunk_attention.cpp
//     tests/kernels/chunk_attention_cuda_cases.cpp tests/kernels/chunk_attention_cuda_check.cpp
//     ca.o -L$CUDA_HOME/lib64 -lcudart -o chunk_check
#include <cstdio>

#include "tests/kernels/chunk_attention_cuda_cases.hpp"

int main() {
  using namespace reach::tests;
  if (!chunk_cuda_device_available()) {
    std::printf("SKIP: no CUDA device\n");
    return 0;
  }
  int failures = 0;
  unsigned seed = 4321;
  std::printf("%-62s %8s %8s %8s %8s %8s %8s %5s\n", "case", "out", "dq", "dk", "dv", "dr", "dL",
              "idx");
  for (const auto& c : chunk_cuda_cases()) {
    const auto r = run_chunk_cuda_case(c, seed++);
    if (!r.error.empty()) {
      std::printf("%-62s ERROR %s\n", r.name.c_str(), r.error.c_str());
      ++failures;
      continue;
    }
    std::printf("%-62s", r.name.c_str());
    for (double e : r.err) std::printf(" %8.1e", e);
    std::printf(" %5ld %s%s\n", r.index_mismatches, r.passed ? "PASS" : "FAIL",
                r.all_written ? "" : " (NaN left)");
    std::printf("%-62s", "  bound");
    for (double b : r.bound) std::printf(" %8.1e", b);
    std::printf("\n");
    failures += r.passed ? 0 : 1;
  }
  std::printf("%s: %d failing case(s)\n", failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
