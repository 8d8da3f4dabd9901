// Shared by `reach eval` and `reach demo`: length parsing and the perplexity-vs-length report
// (Markdown, JSON, gnuplot PNG).
#pragma once

#include <string>
#include <vector>

#include "eval/perplexity.hpp"

namespace reach::cli {

struct ModelLengths {
  std::string label;
  int64_t train_length = 0;
  std::vector<eval::LengthResult> results;
};

// "1x,2x,4x,8x" (multiples of train_length) or plain token counts; throws on bad input.
std::vector<int64_t> parse_lengths(const std::string& text, int64_t train_length);

std::string markdown_table(const std::vector<ModelLengths>& models);

// Writes whichever paths are non-empty. The PNG needs gnuplot (Debian gnuplot-nox).
void write_reports(const std::vector<ModelLengths>& models, const std::string& json_path,
                   const std::string& markdown_path, const std::string& png_path);

}  // namespace reach::cli
