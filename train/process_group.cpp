#include "train/process_group.hpp"

#include <fmt/core.h>
#include <torch/version.h>

#include <stdexcept>
#include <thread>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <vector>

#ifdef REACH_C10D_GLOO
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef REACH_C10D_NCCL
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace reach::train {
namespace {

// The class both Gloo and NCCL process groups derive from: LibTorch 2 split the backends out of
// c10d::ProcessGroup into c10d::Backend.
#if TORCH_VERSION_MAJOR >= 2
using CollectiveBackend = c10d::Backend;
#else
using CollectiveBackend = c10d::ProcessGroup;
#endif

const std::string kCheckoutKey = "checked_out";

}  // namespace

std::string collectives_unavailable(const torch::Device& device) {
  if (device.is_cuda()) {
#ifdef REACH_C10D_NCCL
    return "";
#else
    return "this reach was built against a LibTorch without c10d's NCCL process group (GPU "
           "data-parallel training needs PyTorch's CUDA LibTorch with NCCL)";
#endif
  }
#ifdef REACH_C10D_GLOO
  return "";
#else
  return "this reach was built without c10d's Gloo process group (CPU data-parallel training "
         "needs Gloo's headers: Debian's libgloo-dev, see scripts/install-deps)";
#endif
}

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<CollectiveBackend> backend;
  std::chrono::milliseconds timeout;
};

ProcessGroup::ProcessGroup(const World& world, std::chrono::milliseconds timeout)
    : world_(world), impl_(std::make_unique<Impl>()) {
  impl_->timeout = timeout;
  c10d::TCPStoreOptions options;
  options.port = world.master_port;
  options.isServer = world.rank == 0 && !world.launcher_serves_store;
  options.numWorkers = static_cast<size_t>(world.size);
  options.waitWorkers = true;
  options.timeout = timeout;
  try {
    impl_->store = c10::make_intrusive<c10d::PrefixStore>(
        "reach/attempt_" + world.attempt,
        c10::make_intrusive<c10d::TCPStore>(world.master_addr, options));
  } catch (const c10::Error& e) {
    throw std::runtime_error(
        fmt::format("rank {}: cannot {} the rendezvous store at MASTER_ADDR={} MASTER_PORT={}: {}",
                    world.rank, world.rank == 0 ? "serve" : "reach", world.master_addr,
                    world.master_port, e.what_without_backtrace()));
  }
}

ProcessGroup::~ProcessGroup() {
  // Before the collectives start, the ranks talk through the store that rank 0 serves: rank 0
  // keeps it up until every rank has checked out (read the start verdict or rank 0's error),
  // for at most kCheckoutWait. Once the collectives run, every rank is past the store.
  if (impl_->backend) return;
  constexpr auto kCheckoutWait = std::chrono::seconds(30);
  try {
    impl_->store->add(kCheckoutKey, 1);
    if (world_.rank != 0) return;
    const auto deadline = std::chrono::steady_clock::now() + kCheckoutWait;
    while (impl_->store->add(kCheckoutKey, 0) < world_.size &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  } catch (const std::exception&) {
    // A rank gone already: nothing to wait for.
  }
}

void ProcessGroup::set(const std::string& key, const std::string& value) {
  impl_->store->set(key, std::vector<uint8_t>(value.begin(), value.end()));
}

std::string ProcessGroup::get(const std::string& key) {
  try {
    impl_->store->wait({key}, impl_->timeout);
  } catch (const c10::Error& e) {
    throw std::runtime_error(fmt::format("rank {}: waited {} s for '{}' from the other ranks: {}",
                                         world_.rank, impl_->timeout.count() / 1000, key,
                                         e.what_without_backtrace()));
  }
  const auto bytes = impl_->store->get(key);
  return {bytes.begin(), bytes.end()};
}

void ProcessGroup::start_collectives(const torch::Device& device) {
  if (const auto why = collectives_unavailable(device); !why.empty()) {
    throw std::runtime_error(why);
  }
  if (device.is_cuda()) {
#ifdef REACH_C10D_NCCL
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = impl_->timeout;
    impl_->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, world_.rank,
                                                                 world_.size, options);
#endif
    return;
  }
#ifdef REACH_C10D_GLOO
  auto options = c10d::ProcessGroupGloo::Options::create(impl_->timeout);
  // GLOO_SOCKET_IFNAME names the network interface, as with PyTorch; otherwise the address
  // this host has on the way to rank 0 (loopback for one machine).
  if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME")) {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
  } else if (world_.master_addr == "127.0.0.1" || world_.master_addr == "localhost") {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  } else {
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  impl_->backend =
      c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, world_.rank, world_.size, options);
#endif
}

ProcessGroup::Wait ProcessGroup::allreduce_sum(torch::Tensor& tensor) {
  if (!impl_->backend) throw std::logic_error("allreduce before start_collectives");
  std::vector<at::Tensor> tensors{tensor};
  auto work = impl_->backend->allreduce(tensors, c10d::AllreduceOptions());
  return [work] { work->wait(); };
}

void ProcessGroup::allreduce_max(torch::Tensor& tensor) {
  if (!impl_->backend) throw std::logic_error("allreduce before start_collectives");
  std::vector<at::Tensor> tensors{tensor};
  c10d::AllreduceOptions options;
  options.reduceOp = c10d::ReduceOp::MAX;
  impl_->backend->allreduce(tensors, options)->wait();
}

}  // namespace reach::train
