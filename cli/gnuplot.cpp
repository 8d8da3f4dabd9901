#include "cli/gnuplot.hpp"

#include <cstdio>
#include <stdexcept>

namespace reach::cli {

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
