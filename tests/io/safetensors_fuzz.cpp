// libFuzzer target: the safetensors parser must either parse or throw std::runtime_error on
// any byte string, never crash, hang or read out of bounds. Built by scripts/fuzz-safetensors
// (clang, -fsanitize=fuzzer,address,undefined); its corpus is replayed by safetensors_test.
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto file = reach::io::parse_safetensors(data, size);
    // Parsed tensors must be consistent with their declared shapes.
    for (const auto& [name, t] : file.tensors) {
      int64_t elements = 1;
      for (int64_t d : t.shape) elements *= d;
      if (static_cast<size_t>(elements * reach::io::dtype_size(t.dtype)) != t.data.size()) {
        __builtin_trap();
      }
    }
  } catch (const std::runtime_error&) {
  }
  return 0;
}
