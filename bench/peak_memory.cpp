#include "bench/peak_memory.hpp"

#include <malloc.h>

#include <algorithm>
#include <fstream>
#include <stdexcept>
#include <string>

#ifdef REACH_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace reach::bench {
namespace {

int64_t status_field_kib(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  }
  return -1;
}

}  // namespace

RssFollowsAllocations::RssFollowsAllocations() {
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  mallopt(M_TRIM_THRESHOLD, 256 * 1024);
  malloc_trim(0);
}

RssFollowsAllocations::~RssFollowsAllocations() {
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
}

bool reset_peak_rss() {
  malloc_trim(0);
  std::ofstream clear("/proc/self/clear_refs");
  if (!clear) return false;
  clear << "5";
  return static_cast<bool>(clear.flush());
}

int64_t current_rss_bytes() { return status_field_kib("VmRSS") * 1024; }
int64_t peak_rss_bytes() { return status_field_kib("VmHWM") * 1024; }

double gpu_peak_mib_of(const std::function<void()>& fn) {
#ifdef REACH_TORCH_CUDA
  namespace alloc = c10::cuda::CUDACachingAllocator;
  const c10::DeviceIndex device = c10::cuda::current_device();
  c10::cuda::device_synchronize();
  alloc::resetPeakStats(device);
  const int64_t base = alloc::getDeviceStats(device).allocated_bytes[0].current;  // 0: all pools
  fn();
  c10::cuda::device_synchronize();
  const int64_t peak = alloc::getDeviceStats(device).allocated_bytes[0].peak;
  return static_cast<double>(std::max<int64_t>(0, peak - base)) / (1024.0 * 1024.0);
#else
  (void)fn;
  throw std::runtime_error("gpu_peak_mib_of: this LibTorch has no CUDA");
#endif
}

}  // namespace reach::bench
