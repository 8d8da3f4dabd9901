// A constant tensor made on the CPU (a fixed entmax alpha, ALiBi / NAPE slopes, SSMax's fixed
// delta and gamma) that the attention op needs where the activations are. `on(device)` copies it
// there once and then returns the cached copy: a host-to-device copy from pageable memory, made
// on every call, would make the host wait for the GPU in each layer's forward and backward.
// Not a registered buffer, so checkpoints do not change. Copies of a DeviceConstant share one
// cache; the cache is guarded by a mutex (models run on several threads on the CPU).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <mutex>
#include <utility>

namespace reach::model::attention {

class DeviceConstant {
 public:
  DeviceConstant() = default;
  explicit DeviceConstant(torch::Tensor cpu) : cpu_(std::move(cpu)) {}

  bool defined() const { return cpu_.defined(); }
  const torch::Tensor& cpu() const { return cpu_; }

  // The tensor on `device` (the CPU tensor itself for the CPU; undefined stays undefined).
  torch::Tensor on(const torch::Device& device) const {
    if (!cpu_.defined() || device.is_cpu()) return cpu_;
    const std::lock_guard lock(cache_->mutex);
    if (!cache_->copy.defined() || cache_->copy.device() != device) {
      cache_->copy = cpu_.to(device);
    }
    return cache_->copy;
  }

 private:
  struct Cache {
    std::mutex mutex;
    torch::Tensor copy;
  };
  torch::Tensor cpu_;
  std::shared_ptr<Cache> cache_ = std::make_shared<Cache>();
};

}  // namespace reach::model::attention
