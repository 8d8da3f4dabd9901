// Report plumbing shared by the CLI's reports: text files written or a clear error, a
// temporary folder for gnuplot's data files, and running a gnuplot script (Debian
// gnuplot-nox) that writes a PNG.
#pragma once

#include <filesystem>
#include <string>

namespace reach::cli {

// Writes `text` to `path`; throws std::runtime_error("cannot write '<path>'") on failure.
void write_text_file(const std::string& path, const std::string& text);

// A fresh temporary folder (named by `tag` and the process id), removed with its files when
// the object goes out of scope, also when plotting throws.
class PlotDataDir {
 public:
  explicit PlotDataDir(const std::string& tag);
  ~PlotDataDir();
  PlotDataDir(const PlotDataDir&) = delete;
  PlotDataDir& operator=(const PlotDataDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Whether a gnuplot program is on PATH: a plot the user did not ask for (the default
// accuracy.png of `reach tasks train`) is skipped with a note where it is not, rather than
// failing a finished run.
bool gnuplot_available();

// Fails early, before any work, when a report could not be written: throws
// std::runtime_error naming `flag` when `path` is a directory, its folder does not exist, or
// it cannot be opened for writing. An empty path is fine (no report asked for).
void check_output_path(const std::string& path, const std::string& flag);

// Runs the script (gnuplot's own output goes to a log, never to standard output); throws
// std::runtime_error when the PNG path is unusable, gnuplot is missing, or it fails (with
// gnuplot's message).
void run_gnuplot(const std::string& script, const std::string& png_path);

}  // namespace reach::cli
