#include "cli/eval_device.hpp"

#include <fmt/core.h>

#include <stdexcept>

#include "train/device.hpp"

namespace reach::cli {

std::string EvalDevice::describe() const {
  const std::string name = train::device_name(device);
  return fmt::format("{}{}, {}", device.str(), device.is_cuda() ? " (" + name + ")" : "",
                     bf16 ? "bf16 autocast" : "fp32");
}

EvalDevice resolve_eval_device(const std::string& device, const std::string& precision) {
  EvalDevice out;
  try {
    out.device = train::resolve_device(device);
  } catch (const std::invalid_argument& e) {
    std::string message = e.what();
    for (size_t at = message.find("train.device"); at != std::string::npos;
         at = message.find("train.device"))
      message.replace(at, 12, "--device");
    throw std::invalid_argument(message);
  }
  if (precision != "fp32" && precision != "bf16") {
    throw std::invalid_argument("--precision must be fp32 or bf16, got '" + precision + "'");
  }
  if (precision == "bf16" && !out.device.is_cuda()) {
    throw std::invalid_argument("--precision bf16 needs a CUDA device; the CPU evaluates in fp32");
  }
  out.bf16 = precision == "bf16";
  return out;
}

void prepare_for_eval(torch::nn::Module& model, const EvalDevice& where, const std::string& what) {
  for (const auto& p : model.named_parameters()) {
    if (!torch::isfinite(p.value()).all().item<bool>()) {
      throw std::runtime_error(what + ": weight '" + p.key() +
                               "' has NaN or infinite values (a diverged run?)");
    }
  }
  model.to(where.device);
  model.eval();
}

}  // namespace reach::cli
