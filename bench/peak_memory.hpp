// Peak-memory probes: the process's resident high-water mark (Linux), and the GPU memory
// LibTorch's CUDA caching allocator hands out.
#pragma once

#include <cstdint>
#include <functional>

namespace reach::bench {

// Resets VmHWM to the current RSS (writes "5" to /proc/self/clear_refs).
// Returns false where the kernel does not allow it.
bool reset_peak_rss();

// While alive, RSS follows allocations: blocks over 256 KiB are mmapped and returned on free
// (glibc would otherwise keep freed memory resident and a later peak would read as zero).
// This makes allocation slower, so time outside it. On exit glibc's thresholds go back to
// their fast defaults for large buffers (32 MiB mmap threshold).
class RssFollowsAllocations {
 public:
  RssFollowsAllocations();
  ~RssFollowsAllocations();
  RssFollowsAllocations(const RssFollowsAllocations&) = delete;
  RssFollowsAllocations& operator=(const RssFollowsAllocations&) = delete;
};
int64_t current_rss_bytes();
int64_t peak_rss_bytes();

// Peak GPU memory allocated through LibTorch on the current CUDA device while fn runs, above
// what was allocated before it, in MiB (fn's work is synchronized). Throws
// std::runtime_error where this LibTorch has no CUDA.
double gpu_peak_mib_of(const std::function<void()>& fn);

}  // namespace reach::bench
