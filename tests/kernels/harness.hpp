// The op test harness: one registry of op x backend x dtype x shape cases, checked against a
// float64 reference on random inputs (in the spirit of ggml's test-backend-ops). No gtest and
// no torch here: the GoogleTest runner (harness_gtest_main.cpp) turns every registered case
// into one test, and a standalone program (tests/kernels/cuda_accuracy_check.cpp) prints the
// cases' errors beside their bounds.
//
// Adding an op's cases (a new .cpp compiled into a harness executable, see tests/CMakeLists.txt):
//
//   #include "tests/kernels/harness.hpp"
//   namespace reach::harness {
//   REACH_OP_CASES(my_op_cases) {  // runs at start-up, adds cases to `registry`
//     for (const auto& s : my_shapes()) {
//       registry.add({"my_op", "cpu", "f32", shape_name(s), "forward", [s](Report& r) {
//         Rng rng(seed_of(s));
//         const auto q = rng.normal(s.size());  // random, never zeros
//         const auto want = my_reference_f64(s, q);
//         const auto got = my_kernel_f32(s, q);
//         r.max_rel("out", got, want, 5e-5);    // state and justify the bound beside it
//       }});
//     }
//   }
//   }  // namespace reach::harness
//
// A case's name is op_backend.dtype_shape_check (gtest suite.test); run with
// REACH_HARNESS_VERBOSE=1 to print every check's error beside its bound. Cases on backend "cuda"
// (or a name containing "cuda") get the ctest label `gpu` and must call r.skip(...) when no
// device is present. The checks a case can make:
//   * max_rel:  max |got - want| / max |want|  (the reference's scale; catches any indexing slip)
//   * max_scaled: max |got - want| / max(1, max |want|)
//   * max_diff: max |got - want|
//   * rel_l2:   ||got - want|| / ||want||
//   * bf16:     rel_l2 within factor x (rel_l2 of the reference rounded to bf16) + slack: judged
//               against what bf16 rounding alone costs (FlashAttention's rule)
//   * fd:       analytic gradients against central finite differences of a scalar loss
//   * lt / fail: any other bound (error < bound), or a failure with a message
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace reach::harness {

// Seeded normal draws. Inputs are never zeros (a zero input hides missing terms).
class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}
  std::vector<double> normal(size_t count, double scale = 1.0);
  std::vector<double> uniform(size_t count, double lo, double hi);
  std::mt19937_64& engine() { return engine_; }

 private:
  std::mt19937_64 engine_;
};

// A stable seed from a case name (FNV-1a), so a case's inputs do not depend on the order in
// which cases are registered or run.
uint64_t seed_of(const std::string& name);

double max_abs(const std::vector<double>& x);
// max |got - want| (NaN when any difference is NaN).
double max_abs_error(const std::vector<double>& got, const std::vector<double>& want);
// max |got - want| / max |want|.
double max_rel_error(const std::vector<double>& got, const std::vector<double>& want);
// ||got - want|| / ||want|| (||got - want|| when want is all zeros).
double rel_l2_error(const std::vector<double>& got, const std::vector<double>& want);

// bfloat16 rounding (to nearest even) of a finite value, and of a vector.
double round_bf16(double x);
std::vector<double> round_bf16(const std::vector<double>& x);
// What rounding the float64 result to bf16 costs: rel_l2_error(round_bf16(ref), ref).
double bf16_rounding_error(const std::vector<double>& ref);

// Element conversions for the kernels' float32 paths.
std::vector<float> to_float(const std::vector<double>& x);
template <typename T>
std::vector<double> to_double(const std::vector<T>& x) {
  return std::vector<double>(x.begin(), x.end());
}

// The bf16 rule: a bf16 result's rel. L2 error must be within
//   factor * bf16_rounding_error(reference) + slack.
struct Bf16Rule {
  double factor = 2.0;  // FlashAttention's: at most twice what rounding the exact result costs
  double slack = 1e-4;  // for tensors whose own bf16 rounding error is tiny
  double bound(const std::vector<double>& ref) const;
};

// Central finite differences of a scalar loss: for each index i, (loss(+h) - loss(-h)) / 2h,
// where loss_at(i, delta) evaluates the loss with element i moved by delta (and restores it).
// The error of element i is |analytic_i - fd_i| / max(1, min(|analytic_i|, |fd_i|)): relative
// for large gradients, absolute for small ones (no looser than either 1e-6 * max(1, |analytic|)
// or 1e-6 * (1 + |fd|) at the same bound). Returns the largest error and where it was.
struct FdResult {
  double error = 0;
  size_t worst = 0;
  double analytic = 0, numeric = 0;  // at `worst`
};
FdResult finite_difference_error(const std::vector<size_t>& indices,
                                 const std::function<double(size_t)>& analytic,
                                 const std::function<double(size_t, double)>& loss_at,
                                 double h = 1e-6);
// Same, for a gradient with respect to a host vector x that `loss` reads.
FdResult finite_difference_error(std::vector<double>& x, const std::vector<double>& analytic,
                                 const std::function<double()>& loss,
                                 const std::vector<size_t>& indices = {}, double h = 1e-6);
// `count` distinct-or-not random indices into [0, size) (every index when count >= size).
std::vector<size_t> sample_indices(size_t size, size_t count, std::mt19937_64& rng);

// One measured quantity against its bound (passes when error < bound, strictly: no looser than
// any earlier EXPECT_LT / EXPECT_LE / EXPECT_NEAR form; NaN fails).
struct Check {
  std::string what;
  double error = 0;
  double bound = 0;
  bool passed() const { return error < bound; }
};

// What a case reports: its checks, failures with a message, or why it was skipped.
class Report {
 public:
  void lt(const std::string& what, double error, double bound);
  void max_rel(const std::string& what, const std::vector<double>& got,
               const std::vector<double>& want, double bound);
  // max |got - want| / max(1, max |want|): relative for large tensors, absolute for small.
  void max_scaled(const std::string& what, const std::vector<double>& got,
                  const std::vector<double>& want, double bound);
  // max |got - want| (absolute).
  void max_diff(const std::string& what, const std::vector<double>& got,
                const std::vector<double>& want, double bound);
  void rel_l2(const std::string& what, const std::vector<double>& got,
              const std::vector<double>& want, double bound);
  void bf16(const std::string& what, const std::vector<double>& got, const std::vector<double>& ref,
            const Bf16Rule& rule = {});
  void fd(const std::string& what, const FdResult& result, double bound);
  void fail(const std::string& message);
  void skip(const std::string& reason) { skipped_ = reason; }

  const std::vector<Check>& checks() const { return checks_; }
  const std::vector<std::string>& failures() const { return failures_; }
  const std::string& skipped() const { return skipped_; }
  bool passed() const;

 private:
  std::vector<Check> checks_;
  std::vector<std::string> failures_;
  std::string skipped_;
};

struct OpCase {
  std::string op;       // e.g. "dilated_attention"
  std::string backend;  // "cpu" (raw kernels), "cuda", "torch" (the torch op on the CPU), ...
  std::string dtype;    // "f64", "f32", "bf16", or "mixed"
  std::string shape;    // e.g. "bh2_n7_d16_W64_K0"
  std::string check;    // e.g. "forward", "backward", "fd"
  std::function<void(Report&)> run;

  std::string suite() const { return op + "_" + backend; }  // gtest suite name
  std::string test() const { return dtype + "_" + shape + "_" + check; }
  std::string name() const { return suite() + "." + test(); }
  bool needs_gpu() const;
};

class Registry {
 public:
  static Registry& instance();
  // Throws std::logic_error on a duplicate name or an empty field.
  void add(OpCase c);
  const std::vector<OpCase>& cases() const { return cases_; }
  // Runs one case; an exception is a failure of that case.
  static Report run(const OpCase& c);

 private:
  std::vector<OpCase> cases_;
};

struct Registrar {
  explicit Registrar(void (*fill)(Registry&)) { fill(Registry::instance()); }
};

// Defines a function that adds cases to `registry`, run once at program start.
#define REACH_OP_CASES(name)                                         \
  static void name(::reach::harness::Registry& registry);            \
  static const ::reach::harness::Registrar name##_registrar_{&name}; \
  static void name([[maybe_unused]] ::reach::harness::Registry& registry)

// "n7" style shape fragments: shape_part("n", 7) == "n7".
std::string shape_part(const std::string& key, double value);

}  // namespace reach::harness
