// The switch of the fused block ops, and their error on builds without CUDA kernels (the
// model never calls them there: fused_block_kernels_enabled() is false).
#include "ops/block_ops.hpp"

#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "kernels/cuda/add_layer_norm.hpp"  // kMaxLayerNormDim (no CUDA headers)
#include "kernels/cuda/bias_gelu.hpp"       // kMaxBiasGeluCols (no CUDA headers)

namespace reach::ops {
namespace {

bool& switched_on() {
  static bool on = [] {
    // On unless REACH_FUSED_KERNELS=0 (the tensor-op path, for comparisons).
    const char* value = std::getenv("REACH_FUSED_KERNELS");
    return value == nullptr || std::strcmp(value, "0") != 0;
  }();
  return on;
}

}  // namespace

bool fused_block_kernels_built() {
#ifdef REACH_BLOCK_OPS_CUDA
  return true;
#else
  return false;
#endif
}

bool fused_block_kernels_enabled() { return fused_block_kernels_built() && switched_on(); }

void set_fused_block_kernels(bool enabled) { switched_on() = enabled; }

bool add_layer_norm_supports(const torch::Tensor& x, int64_t dim) {
  return fused_block_kernels_enabled() && x.is_cuda() && x.scalar_type() == torch::kFloat32 &&
         x.size(-1) == dim && dim <= kernels::gpu::kMaxLayerNormDim;
}

bool swiglu_supports(const torch::Tensor& a, const torch::Tensor& b) {
  const auto type = a.scalar_type();
  return fused_block_kernels_enabled() && a.is_cuda() && b.device() == a.device() &&
         b.scalar_type() == type && b.sizes() == a.sizes() &&
         (type == torch::kFloat32 || type == torch::kBFloat16);
}

bool bias_gelu_supports(const torch::Tensor& h0, const torch::Tensor& bias) {
  const auto type = h0.scalar_type();
  return fused_block_kernels_enabled() && h0.is_cuda() && h0.dim() == 2 && h0.is_contiguous() &&
         h0.numel() > 0 && h0.size(1) <= kernels::gpu::kMaxBiasGeluCols &&
         (type == torch::kFloat32 || type == torch::kBFloat16) && bias.defined() &&
         bias.device() == h0.device() && bias.scalar_type() == torch::kFloat32 && bias.dim() == 1 &&
         bias.size(0) == h0.size(1) && bias.is_contiguous();
}

#ifndef REACH_BLOCK_OPS_CUDA
std::array<torch::Tensor, 3> rope_split(const torch::Tensor&, int64_t, const torch::Tensor&,
                                        const torch::Tensor&, bool) {
  throw std::invalid_argument(
      "rope_split: this build has no CUDA kernels (it needs a LibTorch "
      "with CUDA); use the tensor-op path");
}

torch::Tensor merge_heads(const torch::Tensor&) {
  throw std::invalid_argument(
      "merge_heads: this build has no CUDA kernels (it needs a LibTorch "
      "with CUDA); use the tensor-op path");
}

std::pair<torch::Tensor, torch::Tensor> add_layer_norm(const torch::Tensor&, const torch::Tensor&,
                                                       const torch::Tensor&, const torch::Tensor&,
                                                       double) {
  throw std::invalid_argument(
      "add_layer_norm: this build has no CUDA kernels (it needs a "
      "LibTorch with CUDA); use the tensor-op path");
}

std::pair<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor&, const torch::Tensor&,
                                                     const torch::Tensor&, double) {
  throw std::invalid_argument(
      "add_rms_norm: this build has no CUDA kernels (it needs a "
      "LibTorch with CUDA); use the tensor-op path");
}

torch::Tensor swiglu(const torch::Tensor&, const torch::Tensor&) {
  throw std::invalid_argument(
      "swiglu: this build has no CUDA kernels (it needs a LibTorch "
      "with CUDA); use the tensor-op path");
}

torch::Tensor bias_gelu(const torch::Tensor&, const torch::Tensor&) {
  throw std::invalid_argument(
      "bias_gelu: this build has no CUDA kernels (it needs a LibTorch "
      "with CUDA); use the tensor-op path");
}

bool linear_bias_supports(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&) {
  return false;
}

torch::Tensor linear_bias(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&) {
  throw std::invalid_argument(
      "linear_bias: this build has no CUDA kernels (it needs a LibTorch "
      "with CUDA); use the tensor-op path");
}
#endif

}  // namespace reach::ops
