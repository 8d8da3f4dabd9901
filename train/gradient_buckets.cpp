#include "train/gradient_buckets.hpp"

#include <fmt/core.h>

#include <stdexcept>

namespace reach::train {

GradientBuckets::GradientBuckets(ProcessGroup& group, std::vector<torch::Tensor> parameters,
                                 int64_t bucket_bytes)
    : group_(group), parameters_(std::move(parameters)) {
  const size_t n = parameters_.size();
  bucket_of_.resize(n);
  slot_of_.resize(n);
  arrived_.assign(n, false);
  // Reverse order; a new bucket when the current one is full or the dtype/device changes.
  std::vector<std::vector<size_t>> groups;
  int64_t filled = 0;
  for (size_t k = n; k-- > 0;) {
    const auto& p = parameters_[k];
    if (!p.requires_grad()) continue;
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    const bool fits = !groups.empty() && filled + bytes <= bucket_bytes &&
                      parameters_[groups.back().front()].dtype() == p.dtype() &&
                      parameters_[groups.back().front()].device() == p.device();
    if (!fits) {
      groups.emplace_back();
      filled = 0;
    }
    groups.back().push_back(k);
    filled += bytes;
  }
  for (const auto& members : groups) {
    Bucket bucket;
    int64_t numel = 0;
    for (size_t k : members) {
      bucket_of_[k] = buckets_.size();
      slot_of_[k] = bucket.members.size();
      bucket.members.push_back(k);
      bucket.offsets.push_back(numel);
      numel += parameters_[k].numel();
    }
    bucket.flat =
        torch::zeros({numel}, parameters_[members.front()].options().requires_grad(false));
    buckets_.push_back(std::move(bucket));
  }
  for (const auto& members : groups) {
    for (size_t k : members) {
      hooks_.push_back(parameters_[k].register_hook(
          [this, k](const torch::Tensor& gradient) { on_gradient(k, gradient); }));
    }
  }
}

GradientBuckets::~GradientBuckets() {
  size_t h = 0;
  for (const auto& bucket : buckets_) {
    for (size_t k : bucket.members) parameters_[k].remove_hook(hooks_[h++]);
  }
}

void GradientBuckets::on_gradient(size_t k, const torch::Tensor& gradient) {
  const std::lock_guard<std::mutex> lock(mutex_);
  if (arrived_[k]) {
    throw std::runtime_error(fmt::format(
        "data-parallel training: parameter {} received a second gradient in one backward", k));
  }
  arrived_[k] = true;
  Bucket& bucket = buckets_[bucket_of_[k]];
  const int64_t numel = parameters_[k].numel();
  bucket.flat.narrow(0, bucket.offsets[slot_of_[k]], numel)
      .copy_(gradient.detach().reshape({numel}));
  ++bucket.arrived;
  launch_ready_buckets();
}

void GradientBuckets::launch_ready_buckets() {
  while (next_launch_ < buckets_.size() &&
         buckets_[next_launch_].arrived == buckets_[next_launch_].members.size()) {
    launch(buckets_[next_launch_++]);
  }
}

void GradientBuckets::launch(Bucket& bucket) {
  // Each rank contributes gradient / world, so the sum is the mean.
  bucket.flat.div_(static_cast<double>(group_.size()));
  bucket.wait = group_.allreduce_sum(bucket.flat);
}

void GradientBuckets::finish() {
  const std::lock_guard<std::mutex> lock(mutex_);
  for (; next_launch_ < buckets_.size(); ++next_launch_) {
    Bucket& bucket = buckets_[next_launch_];
    for (size_t slot = 0; slot < bucket.members.size(); ++slot) {
      const size_t k = bucket.members[slot];
      if (!arrived_[k]) bucket.flat.narrow(0, bucket.offsets[slot], parameters_[k].numel()).zero_();
    }
    launch(bucket);
  }
  torch::NoGradGuard no_grad;
  for (auto& bucket : buckets_) {
    bucket.wait();
    bucket.wait = nullptr;
    for (size_t slot = 0; slot < bucket.members.size(); ++slot) {
      const size_t k = bucket.members[slot];
      // No rank produced one (the ranks run the same model): leave it as one process would.
      if (!arrived_[k]) continue;
      auto& p = parameters_[k];
      const auto mean = bucket.flat.narrow(0, bucket.offsets[slot], p.numel()).view(p.sizes());
      if (p.mutable_grad().defined()) {
        p.mutable_grad().copy_(mean);
      } else {
        p.mutable_grad() = mean.clone();
      }
    }
    bucket.arrived = 0;
  }
  arrived_.assign(arrived_.size(), false);
  next_launch_ = 0;
}

}  // namespace reach::train
