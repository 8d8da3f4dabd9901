#include "pattern/pattern_image.hpp"

#ifdef REACH_HAVE_PNG
#include <png.h>
#endif

#include <cstdio>
#include <memory>
#include <stdexcept>

namespace reach::pattern {

void write_pattern_png(const std::string& path, int64_t seq_len,
                       const std::vector<LayerMask>& layers, int pixel) {
  if (seq_len < 1 || seq_len > 4096) {
    throw std::invalid_argument("pattern image: seq_len must be in [1, 4096], got " +
                                std::to_string(seq_len));
  }
  if (layers.empty()) throw std::invalid_argument("pattern image: no layers to draw");
  const int64_t gap = 8;
  const int64_t panel = seq_len * pixel;
  const int64_t width = static_cast<int64_t>(layers.size()) * (panel + gap) - gap;
  const int64_t height = panel;

  std::vector<unsigned char> rgb(static_cast<size_t>(width * height * 3), 255);
  auto put = [&](int64_t x, int64_t y, unsigned char r, unsigned char g, unsigned char b) {
    unsigned char* p = &rgb[static_cast<size_t>((y * width + x) * 3)];
    p[0] = r;
    p[1] = g;
    p[2] = b;
  };
  for (size_t l = 0; l < layers.size(); ++l) {
    const int64_t x0 = static_cast<int64_t>(l) * (panel + gap);
    std::vector<char> seen(static_cast<size_t>(seq_len));
    for (int64_t i = 0; i < seq_len; ++i) {
      std::fill(seen.begin(), seen.end(), 0);
      for (int64_t w = 0; w < layers[l].window && i - w >= 0; ++w) seen[i - w] = 1;
      for (int64_t d : layers[l].offsets) {
        if (i - d >= 0) seen[i - d] = 2;
      }
      for (int64_t j = 0; j <= i; ++j) {
        unsigned char r = 225, g = 228, b = 235;    // causal, not attended
        if (seen[j] == 1) r = 30, g = 60, b = 140;  // window
        if (seen[j] == 2) r = 200, g = 40, b = 40;  // dilated offsets
        for (int dy = 0; dy < pixel; ++dy) {
          for (int dx = 0; dx < pixel; ++dx) put(x0 + j * pixel + dx, i * pixel + dy, r, g, b);
        }
      }
    }
  }

#ifndef REACH_HAVE_PNG
  // Built with REACH_OPTIONAL_DEPS on a machine without libpng.
  throw std::runtime_error("cannot write '" + path + "': this reach was built without libpng");
#else
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!file) throw std::runtime_error("cannot open '" + path + "' for writing");
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info) throw std::runtime_error("libpng: out of memory");
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw std::runtime_error("libpng: failed writing '" + path + "'");
  }
  png_init_io(png, file.get());
  png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), 8,
               PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int64_t y = 0; y < height; ++y) {
    png_write_row(png, &rgb[static_cast<size_t>(y * width * 3)]);
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
#endif
}

}  // namespace reach::pattern
