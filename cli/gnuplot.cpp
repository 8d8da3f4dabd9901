#include "cli/gnuplot.hpp"

#include <fmt/core.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <stdexcept>

namespace reach::cli {

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  if (!(out << text) || !out.flush()) throw std::runtime_error("cannot write '" + path + "'");
}

PlotDataDir::PlotDataDir(const std::string& tag)
    : path_(std::filesystem::temp_directory_path() / fmt::format("reach-{}-{}", tag, ::getpid())) {
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

PlotDataDir::~PlotDataDir() {
  std::error_code ignored;  // cleanup must not throw from a destructor
  std::filesystem::remove_all(path_, ignored);
}

void run_gnuplot(const std::string& script, const std::string& png_path) {
  FILE* gnuplot = popen("gnuplot 2>&1", "w");
  if (!gnuplot) throw std::runtime_error("cannot run gnuplot (install gnuplot-nox)");
  fputs(script.c_str(), gnuplot);
  if (pclose(gnuplot) != 0) {
    throw std::runtime_error("gnuplot failed writing '" + png_path +
                             "' (is gnuplot-nox installed?)");
  }
}

}  // namespace reach::cli
