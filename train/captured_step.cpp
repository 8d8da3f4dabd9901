#include "train/captured_step.hpp"

#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#ifdef REACH_TORCH_CUDA
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include "model/autocast_cache_off.hpp"

namespace reach::train {

namespace {

bool same_kind(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.defined() != b.defined()) return false;
  return !a.defined() || (a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type());
}

}  // namespace

struct CapturedTrainStep::State {
  DeviceBatch batch;  // the static tensors the graph reads
  torch::Tensor lr;   // float32 [1] on the device
  StepOutputs outputs;
#ifdef REACH_TORCH_CUDA
  std::optional<at::cuda::CUDAStream> side;
  at::cuda::CUDAGraph graph;
#endif
};

std::string CapturedTrainStep::problem(const model::Gpt& net) {
#ifndef REACH_TORCH_CUDA
  (void)net;
  return "this build's LibTorch has no CUDA (no CUDA graphs)";
#else
  const auto device = net->parameters().front().device();
  if (!device.is_cuda()) return "the model is on " + device.str() + ", not a CUDA device";
  const auto& c = net->config();
  if (c.attention == model::AttentionFamily::chunk) {
    return "the chunk family's step has not been checked under CUDA graph capture";
  }
  if (c.normalizer != model::Normalizer::softmax) {
    return "the entmax / ASEntmax / SSMax kernels have not been checked under CUDA graph capture";
  }
  if (c.positions == model::Positions::alibi || c.positions == model::Positions::nape) {
    return "the ALiBi / NAPE slopes are copied from the host at every forward (not capturable)";
  }
  for (const auto& block : net->blocks) {
    if (block->attn->host_value().defined()) {
      return "a learned schedule reads alpha on the host at every forward (not capturable)";
    }
  }
  return {};
#endif
}

CapturedTrainStep::CapturedTrainStep(Body body, torch::Device device)
    : body_(std::move(body)), device_(device), state_(std::make_unique<State>()) {
  if (!device_.is_cuda()) {
    throw std::invalid_argument("CapturedTrainStep: a CUDA graph needs a CUDA device, got " +
                                device_.str());
  }
}

CapturedTrainStep::~CapturedTrainStep() = default;

bool CapturedTrainStep::accepts(const torch::Tensor& sequence, const torch::Tensor& input,
                                const torch::Tensor& target) const {
  if (runs_ == 0) return true;
  const auto& b = state_->batch;
  return same_kind(b.sequence, sequence) && same_kind(b.input, input) &&
         same_kind(b.target, target);
}

StepOutputs CapturedTrainStep::run(const torch::Tensor& sequence, const torch::Tensor& input,
                                   const torch::Tensor& target, double lr) {
#ifndef REACH_TORCH_CUDA
  (void)sequence, (void)input, (void)target, (void)lr;
  throw std::logic_error("CapturedTrainStep: this build's LibTorch has no CUDA");
#else
  if (!accepts(sequence, input, target)) {
    throw std::invalid_argument(
        "CapturedTrainStep: this batch's shapes or types differ from the captured step's");
  }
  auto& s = *state_;
  const c10::cuda::CUDAGuard device_guard(device_);
  if (runs_ == 0) {
    const auto on = [&](const torch::Tensor& t) {
      return t.defined() ? torch::empty(t.sizes(), t.options().device(device_).pinned_memory(false))
                         : torch::Tensor();
    };
    s.batch = {on(sequence), on(input), on(target)};
    s.lr = torch::empty({1}, torch::TensorOptions().device(device_).dtype(torch::kFloat32));
  }
  const auto upload = [](torch::Tensor& to, const torch::Tensor& from) {
    if (to.defined()) to.copy_(from, /*non_blocking=*/true);
  };
  upload(s.batch.sequence, sequence);
  upload(s.batch.input, input);
  upload(s.batch.target, target);
  s.lr.fill_(lr);
  if (runs_ < 2) {
    const model::AutocastCacheOff autocast_cache_off;
    if (!s.side) s.side = at::cuda::getStreamFromPool();
    at::cuda::device_synchronize();
    {
      const c10::cuda::CUDAStreamGuard stream_guard(*s.side);
      if (runs_ == 0) {
        s.outputs = body_(s.batch, s.lr);
      } else {
        s.graph.capture_begin();
        try {
          s.outputs = body_(s.batch, s.lr);
        } catch (const std::exception& e) {
          try {
            s.graph.capture_end();
          } catch (...) {  // the first error is the one to report
          }
          throw std::runtime_error(std::string("CUDA graph capture of the training step failed: ") +
                                   e.what());
        }
        try {
          s.graph.capture_end();
        } catch (const std::exception& e) {
          throw std::runtime_error(std::string("CUDA graph capture of the training step failed: ") +
                                   e.what());
        }
      }
    }
    at::cuda::device_synchronize();
  }
  if (runs_ >= 1) {
    s.graph.replay();
    ++replays_;
  }
  ++runs_;
  return {s.outputs.loss.clone(), s.outputs.grad_norm.clone()};
#endif
}

}  // namespace reach::train
