#include "train/data_parallel.hpp"

#include <fmt/core.h>

#include <stdexcept>

namespace reach::train {

DataParallel::DataParallel(ProcessGroup& group, model::GptImpl& net, int64_t bucket_bytes)
    : group_(group),
      net_(net),
      device_(net.parameters().front().device()),
      buckets_(group, net.parameters(), bucket_bytes) {}

void DataParallel::attach(LoopHooks& hooks) {
  hooks.reduce_gradients = [this] { buckets_.finish(); };
  hooks.average_loss = [this](const torch::Tensor& loss) {
    auto mean = loss.to(torch::kFloat64).div(static_cast<double>(group_.size()));
    group_.allreduce_sum(mean)();
    return mean;
  };
  hooks.any_rank = [this](bool mine) {
    auto flag = torch::full({1}, mine ? 1.0 : 0.0,
                            torch::TensorOptions().dtype(torch::kFloat64).device(device_));
    group_.allreduce_max(flag);
    return flag.item<double>() > 0;
  };
}

void DataParallel::check_replicas_agree(int64_t step) {
  torch::NoGradGuard no_grad;
  auto sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat64).device(device_));
  for (const auto& p : net_.parameters()) sum += p.to(torch::kFloat64).sum();
  // The maximum of (s, -s) over the ranks is (max s, -min s).
  auto extremes = torch::stack({sum, -sum});
  group_.allreduce_max(extremes);
  const double high = extremes[0].item<double>(), low = -extremes[1].item<double>();
  if (high != low) {
    throw std::runtime_error(fmt::format(
        "data-parallel training: after step {} the ranks' weights differ (their sums range from "
        "{:.17g} to {:.17g}); a rank computed differently, so no checkpoint is written",
        step, low, high));
  }
}

}  // namespace reach::train
