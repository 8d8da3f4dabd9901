#include "train/device.hpp"

#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <algorithm>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#ifdef REACH_TORCH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

// Newer LibTorch APIs, by the version that has them.
#define REACH_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||        \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace reach::train {
namespace {

#ifdef REACH_TORCH_CUDA
constexpr bool kTorchHasCuda = true;
#else
constexpr bool kTorchHasCuda = false;
#endif

}  // namespace

torch::Device resolve_device(const std::string& spec) {
  if (spec == "cpu") return torch::kCPU;
  const int64_t gpus = kTorchHasCuda ? static_cast<int64_t>(torch::cuda::device_count()) : 0;
  if (spec == "auto") return gpus > 0 ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  if (spec != "cuda" && !spec.starts_with("cuda:")) {
    throw std::invalid_argument("train.device must be auto, cpu, cuda or cuda:N, got '" + spec +
                                "'");
  }
  if (!kTorchHasCuda) {
    throw std::invalid_argument(
        "train.device = '" + spec +
        "' but this reach was built against a LibTorch without CUDA "
        "(use train.device = cpu, or build against PyTorch's CUDA LibTorch)");
  }
  if (gpus == 0) {
    throw std::invalid_argument("train.device = '" + spec + "' but no CUDA GPU is visible");
  }
  const int64_t index = spec == "cuda" ? 0 : std::stoll(spec.substr(5));
  if (index >= gpus) {
    throw std::invalid_argument("train.device = '" + spec + "' but only " + std::to_string(gpus) +
                                " CUDA GPU(s) are visible");
  }
  return {torch::kCUDA, static_cast<c10::DeviceIndex>(index)};
}

bool resolve_bf16(const std::string& precision, const torch::Device& device) {
  if (precision == "fp32") return false;
  if (precision == "auto") return device.is_cuda();
  if (precision != "bf16") {
    throw std::invalid_argument("train.precision must be auto, fp32 or bf16, got '" + precision +
                                "'");
  }
  if (!device.is_cuda()) {
    throw std::invalid_argument(
        "train.precision = 'bf16' needs a CUDA device; training on the CPU is fp32");
  }
  return true;
}

Bf16Autocast::Bf16Autocast(bool enabled) : enabled_(enabled) {
  if (!enabled_) return;
#if REACH_TORCH_AT_LEAST(2, 4)
  was_enabled_ = at::autocast::is_autocast_enabled(at::kCUDA);
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  at::autocast::set_autocast_enabled(at::kCUDA, true);
#else
  was_enabled_ = at::autocast::is_enabled();
  at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
  at::autocast::set_enabled(true);
#endif
  at::autocast::increment_nesting();
}

Bf16Autocast::~Bf16Autocast() {
  if (!enabled_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
#if REACH_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(at::kCUDA, was_enabled_);
#else
  at::autocast::set_enabled(was_enabled_);
#endif
}

void synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

std::string device_name(const torch::Device& device) {
  if (!device.is_cuda()) return "cpu";
#ifdef REACH_TORCH_CUDA
  return at::cuda::getDeviceProperties(device.index())->name;
#else
  return "cuda";
#endif
}

double peak_flops_from_name(const std::string& name, bool bf16) {
  auto has = [&](const char* part) { return name.find(part) != std::string::npos; };
  // Datasheet dense figures, TFLOP/s: {bf16 tensor cores, fp32 without TF32}.
  std::pair<double, double> peak{0, 0};
  if (has("H200") || has("GH200")) {
    peak = {989.4, 66.9};
  } else if (has("H100")) {
    if (has("PCIe")) {
      peak = {756.0, 51.2};
    } else if (has("NVL")) {
      peak = {835.0, 60.0};
    } else {
      peak = {989.4, 66.9};  // SXM ("NVIDIA H100 80GB HBM3")
    }
  } else if (has("A100")) {
    peak = {312.0, 19.5};
  }
  return (bf16 ? peak.first : peak.second) * 1e12;
}

double mean_keys_per_query(model::AttentionFamily attention, int64_t window,
                           const std::vector<int64_t>& offsets, int64_t seq_len) {
  if (seq_len < 1) return 0;
  const auto n = static_cast<double>(seq_len);
  if (attention == model::AttentionFamily::dense) return (n + 1) / 2;
  // Window keys: min(W, i + 1) for query i.
  const int64_t w = std::min(window, seq_len);
  double keys = static_cast<double>(w) * static_cast<double>(w + 1) / 2 +
                static_cast<double>(seq_len - w) * static_cast<double>(w);
  // Offset o (>= W, so no key twice) reaches a key for queries i >= o.
  for (int64_t o : offsets) keys += static_cast<double>(std::max<int64_t>(0, seq_len - o));
  return keys / n;
}

ModelFlops training_flops_per_token(model::GptImpl& net, int64_t seq_len) {
  ModelFlops flops;
  for (const auto& p : net.parameters()) {
    if (p.dim() == 2) flops.matmul += 6.0 * static_cast<double>(p.numel());
  }
  const auto& config = net.config();
  for (auto& block : net.blocks) {
    const double keys = mean_keys_per_query(config.attention, config.window,
                                            block->attn->integer_offsets(), seq_len);
    flops.attention += 12.0 * static_cast<double>(config.d_model) * keys;
  }
  return flops;
}

bool FusedAdamW::available(const torch::Device& device) {
#if REACH_TORCH_AT_LEAST(2, 1)
  return device.is_cuda();
#else
  (void)device;
  return false;
#endif
}

void FusedAdamW::step() { launch(std::nullopt); }

void FusedAdamW::step(const torch::Tensor& lr) {
  if (!lr.defined() || lr.numel() != 1 || lr.scalar_type() != torch::kFloat32 || !lr.is_cuda()) {
    throw std::invalid_argument(
        "FusedAdamW: the learning rate tensor must be one float32 value on the CUDA device");
  }
  launch(lr);
}

void FusedAdamW::count_host_step() {
  for (auto& group : optimizer_.param_groups()) {
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto& slot = optimizer_.state()[optimizer_state_key(p)];
      if (!slot) throw std::logic_error("FusedAdamW: count_host_step before any step");
      auto& state = static_cast<torch::optim::AdamWParamState&>(*slot);
      state.step(state.step() + 1);
    }
  }
}

void FusedAdamW::launch(const std::optional<torch::Tensor>& device_lr) {
#if REACH_TORCH_AT_LEAST(2, 1)
  torch::NoGradGuard no_grad;
  // The kernel takes tensors of one dtype and device per call (a model may mix float32
  // weights with a float64 learned alpha), so each group is split into such buckets.
  struct Bucket {
    std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
  };
  for (auto& group : optimizer_.param_groups()) {
    const auto& options = static_cast<const torch::optim::AdamWOptions&>(group.options());
    std::map<std::pair<int, std::string>, Bucket> buckets;
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;  // as optimizer.step(): no gradient, no update
      auto& slot = optimizer_.state()[optimizer_state_key(p)];
      if (!slot) {
        auto state = std::make_unique<torch::optim::AdamWParamState>();
        state->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        state->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        slot = std::move(state);
      }
      auto& state = static_cast<torch::optim::AdamWParamState&>(*slot);
      auto& device_step = device_steps_[p.unsafeGetTensorImpl()];
      if (!device_step.defined()) {
        device_step =
            torch::full({}, static_cast<double>(state.step()), p.options().dtype(torch::kFloat32));
      }
      if (!device_lr) state.step(state.step() + 1);  // else count_host_step, per run
      auto& bucket = buckets[{static_cast<int>(p.scalar_type()), p.device().str()}];
      bucket.params.push_back(p);
      bucket.grads.push_back(p.grad());
      bucket.exp_avgs.push_back(state.exp_avg());
      bucket.exp_avg_sqs.push_back(state.exp_avg_sq());
      bucket.steps.push_back(device_step);
    }
    for (auto& [key, b] : buckets) {
      at::_foreach_add_(b.steps, 1.0);
      if (device_lr) {
        at::_fused_adamw_(b.params, b.grads, b.exp_avgs, b.exp_avg_sqs, {}, b.steps, *device_lr,
                          std::get<0>(options.betas()), std::get<1>(options.betas()),
                          options.weight_decay(), options.eps(), options.amsgrad(),
                          /*maximize=*/false);
      } else {
        at::_fused_adamw_(b.params, b.grads, b.exp_avgs, b.exp_avg_sqs, {}, b.steps, options.lr(),
                          std::get<0>(options.betas()), std::get<1>(options.betas()),
                          options.weight_decay(), options.eps(), options.amsgrad(),
                          /*maximize=*/false);
      }
    }
  }
#else
  (void)device_lr;
  throw std::logic_error("FusedAdamW needs LibTorch >= 2.1 and a CUDA device");
#endif
}

torch::Tensor clip_grad_norm_on_device(const std::vector<torch::Tensor>& parameters,
                                       double max_norm) {
  // Per dtype: the multi-tensor kernels take one dtype per call (a float64 learned alpha
  // among float32 weights would otherwise send every tensor down the slow per-tensor path).
  std::map<c10::ScalarType, std::vector<torch::Tensor>> grads;
  for (const auto& p : parameters) {
    if (p.grad().defined()) grads[p.grad().scalar_type()].push_back(p.grad());
  }
  if (grads.empty()) return torch::zeros({});
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> norms;
  for (const auto& [type, group] : grads) {
    norms.push_back(torch::stack(at::_foreach_norm(group, 2)).to(torch::kFloat32));
  }
  const auto total = torch::cat(norms).norm();
  const auto scale = (max_norm / (total + 1e-6)).clamp_max(1.0);
  for (auto& [type, group] : grads) {
#if REACH_TORCH_AT_LEAST(2, 1)
    at::_foreach_mul_(group, scale.to(type));
#else
    for (auto& g : group) g.mul_(scale.to(type));
#endif
  }
  return total;
}

namespace {

// LibTorch 1.x keys the state by the printed TensorImpl address, 2.x by the address itself; a
// template so that only the branch of the LibTorch in use is compiled.
template <typename Key>
Key state_key_of(c10::TensorImpl* impl) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream printed;
    printed << impl;
    return printed.str();
  } else {
    return impl;
  }
}

}  // namespace

OptimizerStateKey optimizer_state_key(const torch::Tensor& parameter) {
  return state_key_of<OptimizerStateKey>(parameter.unsafeGetTensorImpl());
}

}  // namespace reach::train
