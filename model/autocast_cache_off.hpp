// While alive, autocast keeps no cache of cast weights (restored on exit). Used while a step is
// captured in a CUDA graph (infer/decode_graph, train/captured_step): a cached bf16 copy of a
// weight would be freed when the caller's autocast scope ends while the graph still reads it;
// uncached, each cast is a kernel of the graph writing its own memory.
#pragma once

#include <ATen/autocast_mode.h>

namespace reach::model {

class AutocastCacheOff {
 public:
  AutocastCacheOff() : was_(at::autocast::is_autocast_cache_enabled()) {
    at::autocast::set_autocast_cache_enabled(false);
  }
  ~AutocastCacheOff() { at::autocast::set_autocast_cache_enabled(was_); }
  AutocastCacheOff(const AutocastCacheOff&) = delete;
  AutocastCacheOff& operator=(const AutocastCacheOff&) = delete;

 private:
  bool was_;
};

}  // namespace reach::model
