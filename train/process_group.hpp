// The collective operations of a data-parallel training, on LibTorch's distributed engine
// (c10d): a TCPStore for the rendezvous (rank 0 serves it at MASTER_ADDR:MASTER_PORT) and a
// process group: Gloo between CPU processes, NCCL between GPUs. Hides c10d's headers and the
// differences between LibTorch versions (1.13's ProcessGroup, 2.x's Backend).
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "train/world.hpp"

namespace reach::train {

// Why this reach cannot all-reduce tensors of a device type ("" when it can): built without
// c10d's Gloo (CPU) or NCCL (CUDA).
std::string collectives_unavailable(const torch::Device& device);

class ProcessGroup {
 public:
  // How long a rank waits for the others: at the rendezvous, for a store key, in a collective.
  static constexpr std::chrono::seconds kDefaultTimeout{300};

  // Connects to the rendezvous store (rank 0 starts it); the collectives start later, with
  // start_collectives, once the ranks have agreed to train together.
  explicit ProcessGroup(const World& world, std::chrono::milliseconds timeout = kDefaultTimeout);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return world_.rank; }
  int size() const { return world_.size; }

  // The store: set a key, and read one (waiting for it up to the timeout: std::runtime_error
  // naming the key when it does not come).
  void set(const std::string& key, const std::string& value);
  std::string get(const std::string& key);

  // Every rank calls this once: Gloo for tensors on the CPU, NCCL for tensors on a GPU; throws
  // std::runtime_error saying why when this reach has no collectives for that device.
  void start_collectives(const torch::Device& device);

  // Sums `tensor` over the ranks, in place and asynchronously: call the returned function
  // before reading it (on a GPU it orders the current stream after the reduction).
  using Wait = std::function<void()>;
  Wait allreduce_sum(torch::Tensor& tensor);
  // The element-wise maximum over the ranks, in place; returns when done.
  void allreduce_max(torch::Tensor& tensor);

 private:
  struct Impl;
  World world_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace reach::train
