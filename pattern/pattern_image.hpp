// Draws the attended pattern (queries x keys) of one or more layers as a PNG,
// so a person can see the window band and the dilated diagonals.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace reach::pattern {

struct LayerMask {
  std::string title;
  int64_t window = 0;
  std::vector<int64_t> offsets;
};

// Writes one panel per layer side by side; each panel is seq_len x seq_len pixels
// scaled by `pixel` (attended = dark, causal-but-unattended = light, future = white).
// Throws std::runtime_error when the file cannot be written.
void write_pattern_png(const std::string& path, int64_t seq_len,
                       const std::vector<LayerMask>& layers, int pixel = 2);

}  // namespace reach::pattern
