#include "cli/gnuplot.hpp"

#include <fmt/core.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "io/remove_tree.hpp"

namespace reach::cli {

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  if (!(out << text) || !out.flush()) throw std::runtime_error("cannot write '" + path + "'");
}

PlotDataDir::PlotDataDir(const std::string& tag)
    : path_(std::filesystem::temp_directory_path() / fmt::format("reach-{}-{}", tag, ::getpid())) {
  reach::io::remove_tree(path_);
  std::filesystem::create_directories(path_);
}

PlotDataDir::~PlotDataDir() {
  try {
    io::remove_tree(path_);
  } catch (const std::exception&) {  // cleanup must not throw from a destructor
  }
}

void check_output_path(const std::string& path, const std::string& flag) {
  if (path.empty()) return;
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    throw std::runtime_error(flag + " '" + path + "' is a directory (give a file name)");
  }
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty() && !fs::is_directory(parent, ec)) {
    throw std::runtime_error(flag + " '" + path + "': folder '" + parent.string() +
                             "' does not exist");
  }
  const bool existed = fs::exists(path, ec);
  if (!std::ofstream(path, std::ios::app)) {
    throw std::runtime_error(flag + " '" + path + "' cannot be written");
  }
  if (!existed) fs::remove(path, ec);
}

bool gnuplot_available() { return std::system("command -v gnuplot > /dev/null 2>&1") == 0; }

void run_gnuplot(const std::string& script, const std::string& png_path) {
  check_output_path(png_path, "--png");
  const PlotDataDir log_dir("gnuplot-log");
  const auto log = log_dir.path() / "gnuplot.log";
  FILE* gnuplot = popen(("gnuplot > '" + log.string() + "' 2>&1").c_str(), "w");
  if (!gnuplot) throw std::runtime_error("cannot run gnuplot (install gnuplot-nox)");
  fputs(script.c_str(), gnuplot);
  const int status = pclose(gnuplot);
  std::ifstream in(log);
  std::string message, line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t^") != std::string::npos)
      message += (message.empty() ? "" : " ") + line;
  }
  if (status != 0) {
    const bool missing = WIFEXITED(status) && WEXITSTATUS(status) == 127;
    throw std::runtime_error(missing ? "cannot run gnuplot (install gnuplot-nox)"
                                     : "gnuplot failed writing '" + png_path + "'" +
                                           (message.empty() ? "" : ": " + message));
  }
}

}  // namespace reach::cli
