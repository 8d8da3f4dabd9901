// `reach pattern --chunk-size S ...`: the chunk-selection sub-mode of `reach pattern`
// (pattern/chunk_selection.hpp): candidates and chunks read per query at sampled
// positions, and the retrieved tokens over the whole sequence.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <string>

namespace reach::cli {

struct ChunkPatternOptions {
  CLI::Option* chunk_size_flag = nullptr;  // given: run the chunk sub-mode
  int64_t chunk_size = 64;
  int64_t top_k = 8;
  int64_t window = 0;
  std::string budget = "fixed";
  double fraction = 1.0;
  int64_t min_k = 1;

  bool requested() const { return chunk_size_flag != nullptr && chunk_size_flag->count() > 0; }
};

// Adds the chunk flags to `reach pattern`.
std::shared_ptr<ChunkPatternOptions> add_chunk_pattern_options(CLI::App& pattern_command);

// Prints the selection for a sequence of seq_len tokens.
void run_chunk_pattern(const ChunkPatternOptions& options, int64_t seq_len);

}  // namespace reach::cli
