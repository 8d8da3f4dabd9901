// CUDA chunk-attention kernels versus the float64 CPU reference: op harness cases
// (tests/kernels/harness.hpp) on backend "cuda", which skip without a GPU. They run under
// GoogleTest (kernels_cuda_test, ctest label gpu) and in the table of cuda_accuracy_check.
// Shapes and error rule: tests/kernels/chunk_attention_cuda_cases.hpp.
#include <string>

#include "tests/kernels/chunk_attention_cuda_cases.hpp"
#include "tests/kernels/harness.hpp"

namespace reach::harness {
namespace {

std::string shape_of(const tests::ChunkCudaCase& c) {
  return shape_part("B", c.batch) + "_" + shape_part("Hq", c.query_heads) + "_" +
         shape_part("Hkv", c.kv_heads) + "_" + shape_part("n", c.seq_len) + "_" +
         shape_part("d", c.head_dim) + "_" + shape_part("dr", c.retrieval_dim) + "_" +
         shape_part("S", c.chunk_size) + "_" + shape_part("k", c.top_k) + "_" +
         shape_part("W", c.window) + (c.fraction_budget ? "_frac" : "") +
         (c.stick_breaking ? "_sb" : "");
}

REACH_OP_CASES(chunk_attention_cuda_cases) {
  unsigned seed = 77;
  for (const auto& c : tests::chunk_cuda_cases()) {
    const unsigned case_seed = seed++;
    registry.add({"chunk_attention", "cuda", c.bf16 ? "bf16" : "f32", shape_of(c), "fwd_bwd",
                  [c, case_seed](Report& r) {
                    if (!tests::chunk_cuda_device_available()) return r.skip("no CUDA device");
                    const auto res = tests::run_chunk_cuda_case(c, case_seed);
                    if (!res.error.empty()) return r.fail(res.error);
                    if (!res.all_written) r.fail("an output was left unwritten (NaN poison)");
                    if (!res.reproducible) r.fail("a second backward gave different bits");
                    if (res.index_mismatches != 0) {
                      r.fail(std::to_string(res.index_mismatches) +
                             " selected chunk indices differ from the reference");
                    }
                    const char* names[] = {"out", "dq", "dk", "dv", "dr", "dlandmarks"};
                    for (int i = 0; i < 6; ++i) {
                      r.lt(std::string(names[i]) + " rel-L2", res.err[i], res.bound[i]);
                    }
                  }});
  }
}

}  // namespace
}  // namespace reach::harness
