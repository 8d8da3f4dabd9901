// Standalone table of the op harness's cases compiled into this program (the CUDA kernels'
// cases: tests/kernels/dilated_attention_cuda_test.cpp): one line per case with each check's
// error and bound, PASS/FAIL. Exit status 1 on any failure; 0 with "SKIP" when no case could
// run (no GPU). Run by scripts/gpu-check; the same cases run as kernels_cuda_test under ctest.
#include <cstdio>
#include <string>

#include "tests/kernels/harness.hpp"

int main() {
  using reach::harness::Registry;
  int failures = 0, ran = 0;
  std::printf("%-62s %s\n", "case", "check: rel. error / bound ...");
  for (const auto& c : Registry::instance().cases()) {
    const auto report = Registry::run(c);
    if (!report.skipped().empty()) {
      std::printf("%-62s SKIP (%s)\n", c.name().c_str(), report.skipped().c_str());
      continue;
    }
    ++ran;
    std::string line;
    for (const auto& check : report.checks()) {
      char cell[160];
      std::snprintf(cell, sizeof cell, "  %s %.2e/%.2e", check.what.c_str(), check.error,
                    check.bound);
      line += cell;
    }
    for (const auto& message : report.failures()) line += "  FAILURE: " + message;
    std::printf("%-62s %s %s\n", c.name().c_str(), report.passed() ? "PASS" : "FAIL", line.c_str());
    std::fflush(stdout);
    failures += report.passed() ? 0 : 1;
  }
  if (ran == 0) {
    std::printf("SKIP: no case could run here\n");
    return 0;
  }
  std::printf("%s: %d failing case(s) of %d\n", failures ? "FAIL" : "PASS", failures, ran);
  return failures ? 1 : 0;
}
