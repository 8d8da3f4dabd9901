// Where `reach eval` and `reach tasks eval` run: --device auto|cpu|cuda|cuda:N (auto: the first
// CUDA GPU when this build has one and sees it, else the CPU) and --precision fp32|bf16.
//
// fp32 is the default everywhere, so a GPU evaluation agrees with the CPU one up to float32
// summation order: the NLL per token within 1e-4 relative (tests/eval/perplexity_cuda_test.cpp,
// label gpu, says why). bf16 (CUDA only) runs the forward under bf16 autocast, as training
// does: faster, but expect ~1e-2 relative from fp32 (bf16 keeps 8 bits of mantissa; not
// asserted by a test).
#pragma once

#include <torch/torch.h>

#include <string>

namespace reach::cli {

struct EvalDevice {
  torch::Device device{torch::kCPU};
  bool bf16 = false;
  std::string describe() const;  // "cpu, fp32" / "cuda:0 (NVIDIA H200), bf16 autocast"
};

// Throws std::invalid_argument naming --device / --precision.
EvalDevice resolve_eval_device(const std::string& device, const std::string& precision);

// Moves a model to the device; every parameter and buffer must be finite (a NaN/inf weight
// would turn the results into NaN): throws std::runtime_error naming the first that is not.
void prepare_for_eval(torch::nn::Module& model, const EvalDevice& where, const std::string& what);

}  // namespace reach::cli
