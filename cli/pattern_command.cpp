// `reach pattern`: prints, per layer, alpha, the exact offset set, keys per query and
// the attended fraction of the causal matrix; --png draws a few layers.
#include <fmt/core.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <memory>

#include "cli/chunk_pattern.hpp"
#include "cli/commands.hpp"
#include "cli/validators.hpp"
#include "pattern/alpha_schedule.hpp"
#include "pattern/dilated_offsets.hpp"
#include "pattern/pattern_image.hpp"

namespace reach::cli {
namespace {

struct PatternOptions {
  int64_t layers = 16;
  int64_t window = 64;
  int64_t reach = 2048;
  int64_t seq_len = 0;  // 0: the reach
  std::string schedule = "stagger";
  std::string base = "fibonacci";
  double alpha = 1.0;
  double alpha_min = 1.0;
  double alpha_max = 3.0;
  std::string png;
  int64_t png_len = 256;
  std::vector<int64_t> png_layers;
};

void run_pattern(const PatternOptions& o) {
  pattern::ScheduleSpec schedule{pattern::parse_alpha_schedule(o.schedule), o.layers, o.alpha,
                                 o.alpha_min, o.alpha_max};
  const auto base = pattern::parse_offset_base(o.base);
  const auto alphas = pattern::layer_alphas(schedule);
  const int64_t n = o.seq_len > 0 ? o.seq_len : o.reach;
  fmt::print("schedule={} base={} layers={} window={} reach={} seq_len={}", o.schedule,
             pattern::to_string(base), o.layers, o.window, o.reach, n);
  if (schedule.kind == pattern::AlphaSchedule::coprime) {
    fmt::print(" coprime_step={}", pattern::coprime_step(o.layers));
  }
  fmt::print("\n{:>5}  {:>8}  {:>5}  {:>6}  {:>9}  {}\n", "layer", "alpha", "K", "keys/q",
             "attended", "offsets");
  std::vector<pattern::LayerMask> masks;
  for (int64_t l = 0; l < o.layers; ++l) {
    const pattern::DilationSpec spec{base, alphas[static_cast<size_t>(l)], o.window, o.reach};
    std::vector<int64_t> offsets = pattern::integer_offsets(spec);
    std::string offsets_text;
    if (schedule.kind == pattern::AlphaSchedule::learned) {
      const auto frac = pattern::fractional_offsets(spec);
      offsets_text = fmt::format("{::.2f} (init; interpolated)", frac.distances);
    } else {
      offsets_text = fmt::format("{}", offsets);
    }
    const int64_t keys = std::min(o.window, n) + static_cast<int64_t>(offsets.size());
    fmt::print("{:>5}  {:>8.4f}  {:>5}  {:>6}  {:>8.4f}%  {}\n", l, alphas[static_cast<size_t>(l)],
               offsets.size(), keys, 100.0 * pattern::attended_fraction(n, o.window, offsets),
               offsets_text);
    masks.push_back({fmt::format("layer {}", l), o.window, offsets});
  }
  if (!o.png.empty()) {
    std::vector<int64_t> chosen = o.png_layers;
    if (chosen.empty()) {
      for (int64_t l : {int64_t{0}, o.layers / 2, o.layers - 1}) {
        if (std::find(chosen.begin(), chosen.end(), l) == chosen.end()) chosen.push_back(l);
      }
    }
    std::vector<pattern::LayerMask> drawn;
    for (int64_t l : chosen) {
      if (l < 0 || l >= o.layers) {
        throw std::invalid_argument(
            fmt::format("--png-layers: layer {} is outside 0..{}", l, o.layers - 1));
      }
      drawn.push_back(masks[static_cast<size_t>(l)]);
    }
    pattern::write_pattern_png(o.png, o.png_len, drawn, o.png_len <= 256 ? 3 : 1);
    fmt::print("wrote {} (layers {}, first {} queries; blue = window, red = dilated)\n", o.png,
               chosen, o.png_len);
  }
}

}  // namespace

void add_pattern_command(CLI::App& app) {
  auto options = std::make_shared<PatternOptions>();
  auto* cmd = app.add_subcommand("pattern", "Print which keys each query sees, per layer");
  cmd->add_option("--layers", options->layers, "Number of layers L")->check(positive());
  cmd->add_option("--window", options->window, "Local window W")->check(positive());
  cmd->add_option("--reach", options->reach, "Maximum offset R")->check(positive());
  cmd->add_option("--seq-len", options->seq_len,
                  "Sequence length for the attended fraction (default: the reach)");
  cmd->add_option("--schedule", options->schedule, "Alpha across depth")
      ->check(CLI::IsMember({"fixed", "stagger", "coprime", "learned"}));
  cmd->add_option("--base", options->base, "Offset base sequence")
      ->check(CLI::IsMember({"fibonacci", "power_of_two"}));
  cmd->add_option("--alpha", options->alpha, "alpha for the fixed schedule");
  cmd->add_option("--alpha-min", options->alpha_min, "Smallest alpha of the stagger");
  cmd->add_option("--alpha-max", options->alpha_max, "Largest alpha of the stagger");
  cmd->add_option("--png", options->png, "Draw the pattern of a few layers to this PNG file");
  cmd->add_option("--png-len", options->png_len, "Queries drawn in the PNG (<= 4096)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--png-layers", options->png_layers,
                  "Layers drawn (default: first, middle, last)")
      ->delimiter(',');
  const auto chunk = add_chunk_pattern_options(*cmd);
  cmd->callback([options, chunk] {
    if (chunk->requested()) {
      run_chunk_pattern(*chunk, options->seq_len > 0 ? options->seq_len : options->reach);
    } else {
      run_pattern(*options);
    }
  });
}

}  // namespace reach::cli
