// GoogleTest runner of the op harness: every registered case becomes one test
// (suite op_backend, test dtype_shape_check), beside the plain TEST()s of the same executable.
// A case that reports skip() is GTEST_SKIP; each check is one expectation.
// REACH_HARNESS_VERBOSE=1 prints every check's error beside its bound.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>

#include "tests/kernels/harness.hpp"

namespace reach::harness {
namespace {

class OpCaseTest : public testing::Test {
 public:
  explicit OpCaseTest(const OpCase* c) : case_(c) {}
  void TestBody() override {
    const Report report = Registry::run(*case_);
    if (!report.skipped().empty()) GTEST_SKIP() << report.skipped();
    for (const auto& message : report.failures()) ADD_FAILURE() << message;
    const bool verbose = std::getenv("REACH_HARNESS_VERBOSE") != nullptr;
    for (const auto& check : report.checks()) {
      EXPECT_LT(check.error, check.bound) << check.what;
      if (verbose)
        std::printf("  %-70s %.3e < %.3e\n", check.what.c_str(), check.error, check.bound);
    }
    EXPECT_FALSE(report.checks().empty() && report.failures().empty())
        << "a case that checks nothing cannot fail";
  }

 private:
  const OpCase* case_;
};

}  // namespace
}  // namespace reach::harness

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  using reach::harness::OpCase;
  for (const OpCase& c : reach::harness::Registry::instance().cases()) {
    testing::RegisterTest(
        c.suite().c_str(), c.test().c_str(), nullptr, nullptr, __FILE__, __LINE__,
        [&c]() -> reach::harness::OpCaseTest* { return new reach::harness::OpCaseTest(&c); });
  }
  return RUN_ALL_TESTS();
}
