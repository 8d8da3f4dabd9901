#include "train/cpu_threads.hpp"

#include <dlfcn.h>
#include <torch/torch.h>

#include <thread>

namespace reach::train {
namespace {

// Looked up at run time: LibTorch links whichever BLAS the system provides (OpenBLAS here,
// through libblas.so.3), so OpenBLAS is not a link dependency of reach.
template <typename Function>
Function* openblas_function(const char* name) {
  return reinterpret_cast<Function*>(dlsym(RTLD_DEFAULT, name));
}

}  // namespace

int set_cpu_threads(int threads) {
  const int n = threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency());
  torch::set_num_threads(n);
  if (auto* set = openblas_function<void(int)>("openblas_set_num_threads")) set(n);
  return n;
}

int openblas_threads() {
  auto* get = openblas_function<int()>("openblas_get_num_threads");
  return get != nullptr ? get() : 0;
}

}  // namespace reach::train
