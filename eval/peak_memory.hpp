// Process peak-memory probe (Linux): reset the resident high-water mark, run, read it.
#pragma once

#include <cstdint>

namespace reach::eval {

// Resets VmHWM to the current RSS (writes "5" to /proc/self/clear_refs).
// Returns false where the kernel does not allow it.
bool reset_peak_rss();
int64_t current_rss_bytes();
int64_t peak_rss_bytes();

}  // namespace reach::eval
