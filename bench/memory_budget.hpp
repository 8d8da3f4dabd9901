// Whether a benchmark's tensors fit before any is allocated, so a huge length is a clear
// error naming it instead of an integer overflow or an allocator's message from deep inside.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

namespace reach::bench {

// Physical memory of this machine (cuda false) or total memory of the current GPU, in bytes.
int64_t device_memory_bytes(bool cuda);

// Throws std::invalid_argument when `tensors` tensors of shape `dims` with `element_bytes`
// bytes per element overflow 64-bit sizes or need more than device_memory_bytes(cuda).
// `what` names the setting at fault, e.g. "length n = 1000000000".
void require_fits(const std::string& what, std::initializer_list<int64_t> dims, int64_t tensors,
                  int64_t element_bytes, bool cuda);

}  // namespace reach::bench
