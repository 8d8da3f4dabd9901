// A small real-text corpus on disk for the needle and variable-tracking tests: a few KiB of
// English prose written to a temporary file (and a folder of two files) once per process.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace reach::data::tasks::testing {

inline std::string prose() {
  std::string text;
  for (int i = 0; i < 40; ++i) {
    text +=
        "In the beginning God created the heaven and the earth. And the earth was without form, "
        "and void; and darkness was upon the face of the deep. Verse " +
        std::to_string(i) + ".\n";
  }
  return text;  // ~5.6 KB
}

// The path of a text file holding prose().
inline const std::string& corpus_file() {
  static const std::string path = [] {
    const auto dir = std::filesystem::temp_directory_path() /
                     ("reach-filler-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir / "folder");
    std::ofstream(dir / "prose.txt") << prose();
    std::ofstream(dir / "folder" / "a.txt") << prose();
    std::ofstream(dir / "folder" / "b.txt") << prose();
    std::ofstream(dir / "tiny.txt") << "too short";
    return (dir / "prose.txt").string();
  }();
  return path;
}
inline std::string corpus_folder() {
  return (std::filesystem::path(corpus_file()).parent_path() / "folder").string();
}
inline std::string tiny_corpus() {
  return (std::filesystem::path(corpus_file()).parent_path() / "tiny.txt").string();
}

// Whether `needle` (bytes) occurs in `tokens` as consecutive tokens.
inline bool contains_bytes(const std::vector<int32_t>& tokens, int64_t begin, int64_t end,
                           const std::string& needle) {
  for (int64_t i = begin; i + static_cast<int64_t>(needle.size()) <= end; ++i) {
    bool all = true;
    for (size_t j = 0; j < needle.size() && all; ++j) {
      all = tokens[static_cast<size_t>(i) + j] == static_cast<unsigned char>(needle[j]);
    }
    if (all) return true;
  }
  return false;
}

}  // namespace reach::data::tasks::testing
