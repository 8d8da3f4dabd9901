// Runs a gnuplot script (Debian gnuplot-nox) that writes `png_path`; throws
// std::runtime_error when gnuplot is missing or fails.
#pragma once

#include <string>

namespace reach::cli {

void run_gnuplot(const std::string& script, const std::string& png_path);

}  // namespace reach::cli
