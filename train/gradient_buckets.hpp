// Gradient averaging for data-parallel training, overlapped with the backward pass (as
// PyTorch's DistributedDataParallel does it): the parameters are grouped into buckets of about
// `bucket_bytes`, in reverse order of registration (roughly the order the backward produces
// their gradients); a hook on each parameter copies its gradient into its bucket, and a bucket
// whose gradients have all arrived is all-reduced asynchronously while the backward goes on.
// Buckets are launched in index order on every rank (collectives must match across ranks).
// finish() waits for them and writes the mean over the ranks into each parameter's .grad:
// one backward's gradient replaces .grad (the loop zeroes gradients every step; accumulating
// several backward passes per step is not supported).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <mutex>
#include <vector>

#include "train/process_group.hpp"

namespace reach::train {

class GradientBuckets {
 public:
  static constexpr int64_t kDefaultBucketBytes = 25 << 20;  // DistributedDataParallel's default

  GradientBuckets(ProcessGroup& group, std::vector<torch::Tensor> parameters,
                  int64_t bucket_bytes = kDefaultBucketBytes);
  ~GradientBuckets();  // removes the hooks
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;

  // After backward: reduces the buckets not yet launched (a parameter that got no gradient
  // counts as zero there, and its .grad is left alone), waits for every bucket and sets each
  // parameter's gradient to the mean over the ranks; then readies the buckets for the next
  // backward.
  void finish();

  size_t bucket_count() const { return buckets_.size(); }

 private:
  struct Bucket {
    torch::Tensor flat;            // the bucket's gradients, one after another
    std::vector<size_t> members;   // indices into parameters_
    std::vector<int64_t> offsets;  // where each member starts in flat
    size_t arrived = 0;
    ProcessGroup::Wait wait;  // set once launched
  };
  void on_gradient(size_t parameter, const torch::Tensor& gradient);
  void launch_ready_buckets();  // in index order, while the next one is complete
  void launch(Bucket& bucket);

  ProcessGroup& group_;
  std::vector<torch::Tensor> parameters_;
  std::vector<unsigned> hooks_;
  std::vector<size_t> bucket_of_, slot_of_;  // per parameter: its bucket, its place there
  std::vector<bool> arrived_;                // per parameter, this backward
  std::vector<Bucket> buckets_;
  size_t next_launch_ = 0;
  std::mutex mutex_;  // the hooks run on the autograd engine's thread of the device
};

}  // namespace reach::train
