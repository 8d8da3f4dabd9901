// Data-parallel training on one model replica per rank: the loop's hooks (train/loop.hpp) for
// averaging gradients (in buckets, overlapped with the backward: train/gradient_buckets.hpp)
// and losses over the ranks and for stopping together, and a check that the replicas hold the
// same weights.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "model/gpt.hpp"
#include "train/gradient_buckets.hpp"
#include "train/loop.hpp"
#include "train/process_group.hpp"

namespace reach::train {

class DataParallel {
 public:
  // `net` is on its device and the group's collectives are started.
  DataParallel(ProcessGroup& group, model::GptImpl& net,
               int64_t bucket_bytes = GradientBuckets::kDefaultBucketBytes);

  // Sets hooks.reduce_gradients, average_loss and any_rank.
  void attach(LoopHooks& hooks);

  // Throws std::runtime_error naming the step unless every rank's weights sum (in float64) to
  // the same value: ranks that computed differently must not write a checkpoint.
  void check_replicas_agree(int64_t step);

  size_t bucket_count() const { return buckets_.bucket_count(); }

 private:
  ProcessGroup& group_;
  model::GptImpl& net_;
  torch::Device device_;
  GradientBuckets buckets_;
};

}  // namespace reach::train
