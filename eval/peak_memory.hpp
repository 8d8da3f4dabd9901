// Process peak-memory probe (Linux): reset the resident high-water mark, run, read it.
#pragma once

#include <cstdint>

namespace reach::eval {

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

}  // namespace reach::eval
