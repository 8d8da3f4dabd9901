#include "model/attention/positions.hpp"

#include <algorithm>

namespace reach::model::attention {
namespace {

// ALiBi slopes for h heads: 2^(-8 i / h), i = 1..h.
torch::Tensor alibi_slopes(int64_t heads) {
  auto i = torch::arange(1, heads + 1, torch::kFloat64);
  return torch::pow(2.0, -8.0 * i / static_cast<double>(heads));
}

}  // namespace

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos,
                         const torch::Tensor& sin) {
  // chunk, not two narrows: its backward is one cat, where each narrow's would write a
  // zero-filled full-size gradient and add the two.
  const auto halves = x.chunk(2, -1);
  const auto &x1 = halves[0], &x2 = halves[1];
  return torch::cat({x1 * cos - x2 * sin, x1 * sin + x2 * cos}, -1);
}

std::pair<torch::Tensor, torch::Tensor> RopeTables::get(int64_t first, int64_t t,
                                                        const torch::TensorOptions& options) {
  const int64_t needed = first + t;
  const bool same_kind = cos_.defined() && cos_.device() == options.device() &&
                         cos_.scalar_type() == options.dtype().toScalarType();
  if (!same_kind || cos_.size(0) < needed) {
    // Decode asks for one more position each step: grow by a quarter (at least 1024 rows) so
    // the tables are rebuilt O(log n) times, not once per token (each row is computed alone,
    // so a longer table holds the same values).
    const int64_t rows =
        same_kind ? std::max(needed, cos_.size(0) + std::max<int64_t>(1024, cos_.size(0) / 4))
                  : needed;
    // Angles in float32 (float64 for float64 inputs) whatever the compute dtype: in bf16 an
    // angle near position 1,000 is off by up to 2 radians (its spacing there is 4).
    const auto exact = options.dtype(
        options.dtype().toScalarType() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32);
    const int64_t half = head_dim_ / 2;
    auto inv_freq = torch::pow(base_, -torch::arange(0, half, exact) / static_cast<double>(half));
    auto angles = torch::outer(torch::arange(rows, exact), inv_freq);  // [rows, half]
    cos_ = angles.cos().to(options.dtype());
    sin_ = angles.sin().to(options.dtype());
  }
  if (first == 0 && cos_.size(0) == t) return {cos_, sin_};
  return {cos_.narrow(0, first, t), sin_.narrow(0, first, t)};
}

torch::Tensor position_slopes(Positions positions, int64_t heads) {
  switch (positions) {
    case Positions::alibi:
      return alibi_slopes(heads);
    case Positions::nape: {
      const int64_t nope = heads / 2;
      return torch::cat({torch::zeros({nope}, torch::kFloat64), alibi_slopes(heads - nope)});
    }
    case Positions::rope:
    case Positions::nope:
      break;
  }
  return {};
}

}  // namespace reach::model::attention
