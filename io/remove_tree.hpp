// Deletes a file or a directory tree (what std::filesystem::remove_all does), through POSIX
// nftw(). Why not remove_all: PyTorch's wheels export their own copy of parts of libstdc++ from
// libtorch.so, and on the GPU machine a reach binary's std::filesystem::remove_all bound to that
// copy, which called through a null pointer (2026-12-02, TaskTrainerGpu and every checkpoint
// clean-up). This keeps the deletion independent of which C++ library a symbol binds to.
#pragma once

#include <cstdint>
#include <filesystem>

namespace reach::io {

// Removes `path` and everything below it (symbolic links are removed, not followed); a path
// that does not exist is not an error. Returns the number of entries removed; throws
// std::filesystem::filesystem_error naming the entry that could not be removed.
std::uintmax_t remove_tree(const std::filesystem::path& path);

}  // namespace reach::io
