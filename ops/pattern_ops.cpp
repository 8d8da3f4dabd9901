// pattern/'s definitions as TORCH_LIBRARY ops, so that Python (python/reach/pattern.py,
// scripts/bench_attention_gpu.py) takes offset sets and alpha schedules from the C++ code
// instead of re-deriving them. Sets come back as float64 tensors, integers as int:
//   reach::dilated_offsets(str base, float alpha, int window, int reach) -> Tensor
//   reach::fractional_offsets(str base, float alpha, int window, int reach) -> (Tensor, Tensor)
//   reach::layer_alphas(str schedule, int layers, float alpha0, float alpha_min,
//                       float alpha_max) -> Tensor
//   reach::coprime_step(int layers) -> int
//   reach::paper_offsets(str base, float alpha, int window, int seq_len) -> Tensor
//   reach::paper_learned_distances(float alpha, str base, int window, int seq_len) -> Tensor
//   reach::paper_layer_alphas(str schedule, int layers) -> Tensor
//   reach::paper_coprime_step(int layers) -> int
//   reach::attended_fraction(int seq_len, int window, Tensor offsets) -> float
// A bad argument is a torch error carrying pattern/'s message.
#include <torch/library.h>
#include <torch/torch.h>

#include <stdexcept>

#include "pattern/alpha_schedule.hpp"
#include "pattern/dilated_offsets.hpp"
#include "pattern/paper_convention.hpp"

namespace reach::ops {
namespace {

template <typename F>
auto checked(const char* op, F&& f) {
  try {
    return f();
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK(false, op, ": ", e.what());
  }
}

template <typename T>
torch::Tensor as_tensor(const std::vector<T>& values) {
  return torch::tensor(std::vector<double>(values.begin(), values.end()), torch::kFloat64);
}

pattern::OffsetBase base_of(c10::string_view name) {
  return pattern::parse_offset_base(std::string(name));
}

torch::Tensor dilated_offsets(c10::string_view base, double alpha, int64_t window, int64_t reach) {
  return checked("dilated_offsets", [&] {
    return as_tensor(pattern::integer_offsets({base_of(base), alpha, window, reach}));
  });
}

std::tuple<torch::Tensor, torch::Tensor> fractional_offsets(c10::string_view base, double alpha,
                                                            int64_t window, int64_t reach) {
  return checked("fractional_offsets", [&] {
    const auto fo = pattern::fractional_offsets({base_of(base), alpha, window, reach});
    return std::make_tuple(as_tensor(fo.distances), as_tensor(fo.base_values));
  });
}

torch::Tensor layer_alphas(c10::string_view schedule, int64_t layers, double alpha0,
                           double alpha_min, double alpha_max) {
  return checked("layer_alphas", [&] {
    const pattern::ScheduleSpec spec{pattern::parse_alpha_schedule(std::string(schedule)), layers,
                                     alpha0, alpha_min, alpha_max};
    return as_tensor(pattern::layer_alphas(spec));
  });
}

int64_t coprime_step(int64_t layers) {
  return checked("coprime_step", [&] {
    TORCH_CHECK(layers >= 1, "coprime_step: layers must be >= 1, got ", layers);
    return pattern::coprime_step(layers);
  });
}

torch::Tensor paper_offsets(c10::string_view base, double alpha, int64_t window, int64_t seq_len) {
  return checked("paper_offsets", [&] {
    return as_tensor(pattern::paper_offsets({base_of(base), alpha, window, seq_len}));
  });
}

torch::Tensor paper_learned_distances(double alpha, c10::string_view base, int64_t window,
                                      int64_t seq_len) {
  return checked("paper_learned_distances", [&] {
    std::vector<double> targets;
    for (const auto& column : pattern::paper_learned_columns(static_cast<float>(alpha),
                                                             base_of(base), window, seq_len)) {
      targets.push_back(column.target);
    }
    return as_tensor(targets);
  });
}

torch::Tensor paper_layer_alphas(c10::string_view schedule, int64_t layers) {
  return checked("paper_layer_alphas", [&] {
    return as_tensor(
        pattern::paper_layer_alphas(pattern::parse_alpha_schedule(std::string(schedule)), layers));
  });
}

int64_t paper_coprime_step(int64_t layers) {
  return checked("paper_coprime_step", [&] { return pattern::paper_coprime_step(layers); });
}

double attended_fraction(int64_t seq_len, int64_t window, const torch::Tensor& offsets) {
  TORCH_CHECK(offsets.dim() == 1, "attended_fraction: offsets must be 1-D, got ", offsets.sizes());
  const torch::Tensor ints = offsets.to(torch::kCPU, torch::kLong).contiguous();
  const std::vector<int64_t> values(ints.data_ptr<int64_t>(),
                                    ints.data_ptr<int64_t>() + ints.numel());
  return checked("attended_fraction",
                 [&] { return pattern::attended_fraction(seq_len, window, values); });
}

}  // namespace
}  // namespace reach::ops

TORCH_LIBRARY_FRAGMENT(reach, m) {
  using namespace reach::ops;
  m.def("dilated_offsets(str base, float alpha, int window, int reach) -> Tensor",
        &dilated_offsets);
  m.def("fractional_offsets(str base, float alpha, int window, int reach) -> (Tensor, Tensor)",
        &fractional_offsets);
  m.def(
      "layer_alphas(str schedule, int layers, float alpha0=1.0, float alpha_min=1.0, "
      "float alpha_max=3.0) -> Tensor",
      &layer_alphas);
  m.def("coprime_step(int layers) -> int", &coprime_step);
  m.def("paper_offsets(str base, float alpha, int window, int seq_len) -> Tensor", &paper_offsets);
  m.def("paper_learned_distances(float alpha, str base, int window, int seq_len) -> Tensor",
        &paper_learned_distances);
  m.def("paper_layer_alphas(str schedule, int layers) -> Tensor", &paper_layer_alphas);
  m.def("paper_coprime_step(int layers) -> int", &paper_coprime_step);
  m.def("attended_fraction(int seq_len, int window, Tensor offsets) -> float", &attended_fraction);
}
