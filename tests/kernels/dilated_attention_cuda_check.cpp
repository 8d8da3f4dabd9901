// Standalone accuracy check of the CUDA kernels (no gtest: the GPU machine has none).
// Prints one line per case and PASS/FAIL; exit status 1 on any failure, 0 with
// "SKIP" when no GPU is present. Run by scripts/gpu-check.
#include <cstdio>

#include "tests/kernels/dilated_attention_cuda_cases.hpp"

int main() {
  using namespace reach::tests;
  if (!cuda_device_available()) {
    std::printf("SKIP: no CUDA device\n");
    return 0;
  }
  int failures = 0;
  unsigned seed = 1234;
  std::printf("%-50s %9s %9s %9s %9s %9s  %s\n", "case", "out", "dq", "dk", "dv", "doff",
              "(rel. L2 error / bound)");
  for (const auto& c : cuda_cases()) {
    const auto r = run_cuda_case(c, seed++);
    if (!r.error.empty()) {
      std::printf("%-50s ERROR %s\nFAIL\n", r.name.c_str(), r.error.c_str());
      ++failures;
      continue;
    }
    std::printf("%-50s %9.2e %9.2e %9.2e %9.2e %9.2e  %s%s\n", r.name.c_str(), r.err_out, r.err_dq,
                r.err_dk, r.err_dv, r.err_doff, r.passed ? "PASS" : "FAIL",
                r.all_written ? "" : " (unwritten/NaN output)");
    std::printf("%-50s %9.2e %9.2e %9.2e %9.2e %9.2e  bound\n", "", r.bound_out, r.bound_dq,
                r.bound_dk, r.bound_dv, r.bound_doff);
    failures += r.passed ? 0 : 1;
  }
  std::printf("%s: %d failing case(s)\n", failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
