#include "io/remove_tree.hpp"

#include <ftw.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <string>
#include <system_error>

namespace reach::io {
namespace {

// nftw's callback takes no user pointer: one deletion at a time per thread.
thread_local std::uintmax_t removed_count = 0;
thread_local int failed_errno = 0;
thread_local std::string failed_path;

int remove_entry(const char* entry, const struct stat*, int, struct FTW*) {
  if (std::remove(entry) != 0) {
    failed_errno = errno;
    failed_path = entry;
    return 1;  // stop the walk
  }
  ++removed_count;
  return 0;
}

}  // namespace

std::uintmax_t remove_tree(const std::filesystem::path& path) {
  struct stat info {};
  if (lstat(path.c_str(), &info) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return 0;
    throw std::filesystem::filesystem_error("cannot remove", path,
                                            std::error_code(errno, std::generic_category()));
  }
  removed_count = 0;
  failed_errno = 0;
  // Depth first (children before their directory), physical (links are not followed).
  if (nftw(path.c_str(), remove_entry, 32, FTW_DEPTH | FTW_PHYS) != 0) {
    const int code = failed_errno != 0 ? failed_errno : errno;
    throw std::filesystem::filesystem_error(
        "cannot remove", failed_path.empty() ? path : std::filesystem::path(failed_path),
        std::error_code(code, std::generic_category()));
  }
  return removed_count;
}

}  // namespace reach::io
