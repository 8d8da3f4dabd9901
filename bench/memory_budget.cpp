#include "bench/memory_budget.hpp"

#include <fmt/core.h>
#include <unistd.h>

#include <cstdint>
#include <stdexcept>

#ifdef REACH_TORCH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace reach::bench {

int64_t device_memory_bytes(bool cuda) {
  if (cuda) {
#ifdef REACH_TORCH_CUDA
    return static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->totalGlobalMem);
#else
    throw std::invalid_argument("device cuda: this reach was built without CUDA");
#endif
  }
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return INT64_MAX;  // unknown: no limit but overflow
  return static_cast<int64_t>(pages) * static_cast<int64_t>(page);
}

void require_fits(const std::string& what, std::initializer_list<int64_t> dims, int64_t tensors,
                  int64_t element_bytes, bool cuda) {
  // In long double: the product is checked before anything is formed in 64 bits.
  long double bytes = static_cast<long double>(tensors) * static_cast<long double>(element_bytes);
  std::string shape;
  for (const int64_t d : dims) {
    bytes *= static_cast<long double>(d);
    shape += (shape.empty() ? "" : " x ") + std::to_string(d);
  }
  const long double gib = 1024.0L * 1024.0L * 1024.0L;
  if (bytes >= static_cast<long double>(INT64_MAX)) {
    throw std::invalid_argument(
        fmt::format("{}: {} tensors of [{}] would need {:.3g} GiB, beyond 64-bit sizes", what,
                    tensors, shape, static_cast<double>(bytes / gib)));
  }
  const int64_t available = device_memory_bytes(cuda);
  if (bytes > static_cast<long double>(available)) {
    throw std::invalid_argument(fmt::format(
        "{}: {} tensors of [{}] need {:.1f} GiB, more than the {:.1f} GiB of {}", what, tensors,
        shape, static_cast<double>(bytes / gib), static_cast<double>(available / gib),
        cuda ? "memory on this GPU" : "memory on this machine"));
  }
}

}  // namespace reach::bench
