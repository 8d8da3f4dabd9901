// reach::dilated_offsets(str base, float alpha, int window, int reach) -> Tensor: the static
// schedules' integer offsets (pattern::integer_offsets) as a float64 tensor, so that callers of
// the op library from Python (scripts/bench_attention_gpu.py) take offsets from pattern/
// instead of re-deriving them.
#include <torch/library.h>
#include <torch/torch.h>

#include <stdexcept>

#include "pattern/dilated_offsets.hpp"

namespace reach::ops {
namespace {

torch::Tensor dilated_offsets(c10::string_view base, double alpha, int64_t window, int64_t reach) {
  std::vector<int64_t> ints;
  try {
    ints = pattern::integer_offsets(
        {pattern::parse_offset_base(std::string(base)), alpha, window, reach});
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK(false, "dilated_offsets: ", e.what());
  }
  return torch::tensor(std::vector<double>(ints.begin(), ints.end()), torch::kFloat64);
}

}  // namespace
}  // namespace reach::ops

TORCH_LIBRARY_FRAGMENT(reach, m) {
  m.def("dilated_offsets(str base, float alpha, int window, int reach) -> Tensor",
        &reach::ops::dilated_offsets);
}
