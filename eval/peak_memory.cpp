#include "eval/peak_memory.hpp"

#include <malloc.h>

#include <fstream>
#include <string>

namespace reach::eval {
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

}  // namespace reach::eval
