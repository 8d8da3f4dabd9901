// Where training runs and how fast: the device a config asks for, bf16 autocast on CUDA, and
// the model FLOPs behind the model FLOPs utilisation (MFU) that the trainer reports.
//
// MFU = (training FLOPs per token x tokens per second) / the device's dense peak FLOP/s, with
// training FLOPs per token = 6 x (weights used in matrix products: every 2-D parameter, the
// tied embedding counted once, as the output head) + 12 x d_model x sum over layers of the mean
// number of keys a query attends (QK^T and AV, 2 FLOPs per multiply-add, backward = 2x forward).
// Keys are counted as attended (dense causal: (T + 1) / 2 on average; sparse: W plus the
// offsets that fit), not as a dense T x T product, so sparse layers get no credit for skipped work.
#pragma once

#include <torch/torch.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "model/gpt.hpp"

namespace reach::train {

// "auto": cuda:0 when this LibTorch has CUDA and sees a GPU, else the CPU. "cuda" / "cuda:N"
// without a usable GPU: std::invalid_argument naming train.device and the reason.
torch::Device resolve_device(const std::string& spec);

// Whether the forward runs under bf16 autocast: "auto" means on CUDA; "bf16" on the CPU throws.
bool resolve_bf16(const std::string& precision, const torch::Device& device);

// While alive (and enabled), CUDA ops run under bf16 autocast: matrix products and attention in
// bf16, norms, softmax and the loss in fp32, weights and optimizer state stay fp32. On exit the
// cache of bf16 weight copies is cleared, so each step casts the weights it just updated.
class Bf16Autocast {
 public:
  explicit Bf16Autocast(bool enabled);
  ~Bf16Autocast();
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

 private:
  bool enabled_;
  bool was_enabled_ = false;
};

// Blocks until the device's queued work is done (no-op on the CPU).
void synchronize(const torch::Device& device);

// "NVIDIA H100 80GB HBM3" for a GPU, "cpu" for the CPU.
std::string device_name(const torch::Device& device);

// Dense (no structured sparsity) peak FLOP/s of the matrix units from a GPU's name: bf16 tensor
// cores, or fp32 without TF32. 0 when the name is not in the table (and for the CPU).
double peak_flops_from_name(const std::string& name, bool bf16);

// Mean over query positions 0..seq_len-1 of the keys a query attends: dense causal, window
// (the last `window` keys), or window + the integer offsets o with o <= position.
double mean_keys_per_query(model::AttentionFamily attention, int64_t window,
                           const std::vector<int64_t>& offsets, int64_t seq_len);

struct ModelFlops {
  double matmul = 0;     // 6 x weights in matrix products
  double attention = 0;  // 12 x d_model x keys per query, summed over layers
  double total() const { return matmul + attention; }
};
// Training (forward + backward) FLOPs per token at this sequence length (see the top).
ModelFlops training_flops_per_token(model::GptImpl& net, int64_t seq_len);

// One AdamW step per parameter group through LibTorch's fused multi-tensor CUDA kernel
// (at::_fused_adamw_, LibTorch >= 2.1) instead of ~10 small kernels per parameter. The update is
// AdamW's, and the moments and step counts live in `optimizer`'s own state, so checkpoints and
// resume work as with optimizer.step(). available() is false on the CPU and older LibTorch.
class FusedAdamW {
 public:
  static bool available(const torch::Device& device);
  explicit FusedAdamW(torch::optim::AdamW& optimizer) : optimizer_(optimizer) {}
  // At each group's own learning rate; counts the step in the host state.
  void step();
  // At the learning rate held by `lr` (one float32 on the device, read by the kernel, so a step
  // captured in a CUDA graph follows the schedule when it is replayed), for every group; the
  // host state's step counts are left to count_host_step (once per run of the step: a capture
  // runs nothing, a replay runs without the host).
  void step(const torch::Tensor& lr);
  void count_host_step();

 private:
  void launch(const std::optional<torch::Tensor>& device_lr);
  torch::optim::AdamW& optimizer_;
  // The kernel reads step counts from float32 device tensors; the host count in the state is
  // kept in step with them.
  std::map<const void*, torch::Tensor> device_steps_;
};

// Scales the gradients so that their global L2 norm is at most max_norm, as
// torch::nn::utils::clip_grad_norm_ does, but without reading the norm back to the host (so
// the CPU can queue the next step while the GPU works). Returns the norm before clipping, 0-dim.
torch::Tensor clip_grad_norm_on_device(const std::vector<torch::Tensor>& parameters,
                                       double max_norm);

// The key of a parameter in torch::optim's state map: its TensorImpl address, printed as a
// string by LibTorch 1.x and kept as a pointer by 2.x.
using OptimizerStateKey =
    std::remove_cvref_t<decltype(std::declval<torch::optim::AdamW&>().state())>::key_type;
OptimizerStateKey optimizer_state_key(const torch::Tensor& parameter);

}  // namespace reach::train
