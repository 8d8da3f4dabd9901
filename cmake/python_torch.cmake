# REACH_OPS_ONLY (the Python package, python/pyproject.toml): torch is the one of the
# interpreter that runs pip (scikit-build-core passes it as Python_EXECUTABLE). Defines the
# target `torch` and TORCH_INCLUDE_DIRS as find_package(Torch) does.
#
# With the CUDA kernels (nvcc found, REACH_CUDA not OFF): torch's own CMake config, at
# torch.utils.cmake_prefix_path, for torch_cuda / c10_cuda and CUDA's flags; TORCH_CUDA_ARCH_LIST
# is set from the kernels' architecture, since torch's config otherwise probes the GPUs with a
# test program (there is none on a build machine, and CMake 3.25 cannot build that probe).
# Without them: torch's headers and libraries as torch.utils.cpp_extension lists them, because
# the config of a CUDA build of torch (PyPI's) stops when no CUDA toolkit is installed.
find_package(Python COMPONENTS Interpreter REQUIRED)
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c [=[
import torch
from torch.utils import cpp_extension
print(torch.utils.cmake_prefix_path)
print(",".join(cpp_extension.include_paths()))
print(cpp_extension.library_paths()[0])
print(int(torch._C._GLIBCXX_USE_CXX11_ABI))
]=]
  OUTPUT_VARIABLE torch_facts OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE found)
if(NOT found EQUAL 0)
  message(FATAL_ERROR "REACH_OPS_ONLY: ${Python_EXECUTABLE} cannot import torch; install torch "
                      "first and build with pip install --no-build-isolation ./python")
endif()
string(REPLACE "\n" ";" torch_facts "${torch_facts}")
list(GET torch_facts 0 torch_prefix)
list(GET torch_facts 1 torch_includes)
list(GET torch_facts 2 torch_libdir)
list(GET torch_facts 3 torch_cxx11_abi)
string(REPLACE "," ";" torch_includes "${torch_includes}")

if(REACH_HAVE_CUDA)
  list(APPEND CMAKE_PREFIX_PATH "${torch_prefix}")
  if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
    list(GET CMAKE_CUDA_ARCHITECTURES 0 arch)
    math(EXPR major "${arch} / 10")
    math(EXPR minor "${arch} % 10")
    set(TORCH_CUDA_ARCH_LIST "${major}.${minor}")
  endif()
  find_package(Torch REQUIRED)
else()
  set(TORCH_INCLUDE_DIRS ${torch_includes})
  add_library(torch INTERFACE IMPORTED GLOBAL)
  set_target_properties(torch PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${TORCH_INCLUDE_DIRS}"
    INTERFACE_LINK_LIBRARIES
      "${torch_libdir}/libtorch.so;${torch_libdir}/libtorch_cpu.so;${torch_libdir}/libc10.so"
    INTERFACE_COMPILE_DEFINITIONS "_GLIBCXX_USE_CXX11_ABI=${torch_cxx11_abi}")
  message(STATUS "reach (ops only): torch from ${torch_libdir} (CPU)")
endif()
