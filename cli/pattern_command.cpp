// `reach pattern`: prints, per layer, alpha, the exact offset set, keys per query and
// the attended fraction of the causal matrix (--json: the same as JSON, with every attended
// distance); --convention paper gives the main paper's exact sets; --png draws a few layers.
#include <fmt/core.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/chunk_pattern.hpp"
#include "cli/commands.hpp"
#include "cli/validators.hpp"
#include "pattern/alpha_schedule.hpp"
#include "pattern/dilated_offsets.hpp"
#include "pattern/paper_convention.hpp"
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
  std::string convention = "reach";
  bool json = false;
  std::string png;
  int64_t png_len = 256;
  std::vector<int64_t> png_layers;
};

// Beyond this the exact pair counts (and any drawing) stop being meaningful inputs.
constexpr int64_t kMaxLength = int64_t{1} << 40;

// One layer's pattern in reach's operator terms: `window` keys (distances 0..window-1) plus
// the offsets; `alpha` is the layer's (initial, for learned) value.
struct LayerPattern {
  double alpha = 0;
  int64_t window = 0;
  std::vector<int64_t> offsets;
  std::vector<double> learned_distances;  // learned schedules: the real distances at init
};

std::vector<LayerPattern> reach_layers(const PatternOptions& o) {
  const pattern::ScheduleSpec schedule{pattern::parse_alpha_schedule(o.schedule), o.layers, o.alpha,
                                       o.alpha_min, o.alpha_max};
  const auto base = pattern::parse_offset_base(o.base);
  std::vector<LayerPattern> layers;
  for (const double alpha : pattern::layer_alphas(schedule)) {
    const pattern::DilationSpec spec{base, alpha, o.window, o.reach};
    LayerPattern layer{alpha, o.window, pattern::integer_offsets(spec), {}};
    if (schedule.kind == pattern::AlphaSchedule::learned) {
      layer.learned_distances = pattern::fractional_offsets(spec).distances;
    }
    layers.push_back(std::move(layer));
  }
  return layers;
}

// The paper's window W is the distances 0..W: W + 1 keys in reach's terms.
std::vector<LayerPattern> paper_layers(const PatternOptions& o, int64_t seq_len) {
  const auto kind = pattern::parse_alpha_schedule(o.schedule);
  const auto base = pattern::parse_offset_base(o.base);
  std::vector<LayerPattern> layers;
  for (const double alpha : pattern::paper_layer_alphas(kind, o.layers)) {
    LayerPattern layer{
        alpha, o.window + 1, pattern::paper_offsets({base, alpha, o.window, seq_len}), {}};
    if (kind == pattern::AlphaSchedule::learned) {
      for (const auto& column :
           pattern::paper_learned_columns(static_cast<float>(alpha), base, o.window, seq_len)) {
        layer.learned_distances.push_back(column.target);
      }
    }
    layers.push_back(std::move(layer));
  }
  return layers;
}

void print_json(const PatternOptions& o, int64_t n, const std::vector<LayerPattern>& layers) {
  const bool paper = o.convention == "paper";
  nlohmann::json out = {{"convention", o.convention}, {"base", o.base},
                        {"schedule", o.schedule},     {"layers", o.layers},
                        {"window", o.window},         {"seq_len", n}};
  if (!paper) out["reach"] = o.reach;
  if (pattern::parse_alpha_schedule(o.schedule) == pattern::AlphaSchedule::coprime) {
    out["coprime_step"] =
        paper ? pattern::paper_coprime_step(o.layers) : pattern::coprime_step(o.layers);
  }
  nlohmann::json per_layer = nlohmann::json::array();
  for (size_t l = 0; l < layers.size(); ++l) {
    const auto& layer = layers[l];
    std::vector<int64_t> distances;
    for (int64_t d = 0; d < std::min(layer.window, n); ++d) distances.push_back(d);
    distances.insert(distances.end(), layer.offsets.begin(), layer.offsets.end());
    nlohmann::json entry = {
        {"layer", l},
        {"alpha", layer.alpha},
        {"window_keys", layer.window},
        {"offsets", layer.offsets},
        {"distances", distances},
        {"keys_per_query", distances.size()},
        {"attended_fraction", pattern::attended_fraction(n, layer.window, layer.offsets)}};
    if (!layer.learned_distances.empty()) entry["learned_distances"] = layer.learned_distances;
    per_layer.push_back(std::move(entry));
  }
  out["per_layer"] = std::move(per_layer);
  fmt::print("{}\n", out.dump(2));
}

void run_pattern(const PatternOptions& o) {
  const bool paper = o.convention == "paper";
  if (o.reach > kMaxLength || o.seq_len > kMaxLength) {
    throw std::invalid_argument(
        fmt::format("--reach and --seq-len must be <= 2^40, got {} and {}", o.reach, o.seq_len));
  }
  // The paper's context length defaults to its training length; reach's to the reach.
  const int64_t n = o.seq_len > 0 ? o.seq_len : (paper ? 1024 : o.reach);
  const auto layers = paper ? paper_layers(o, n) : reach_layers(o);
  if (o.json) {
    print_json(o, n, layers);
    return;
  }
  const auto kind = pattern::parse_alpha_schedule(o.schedule);
  if (paper) {
    fmt::print("convention=paper schedule={} base={} layers={} window=0..{} seq_len={}", o.schedule,
               o.base, o.layers, o.window, n);
  } else {
    fmt::print("schedule={} base={} layers={} window={} reach={} seq_len={}", o.schedule,
               pattern::to_string(pattern::parse_offset_base(o.base)), o.layers, o.window, o.reach,
               n);
  }
  if (kind == pattern::AlphaSchedule::coprime) {
    fmt::print(" coprime_step={}",
               paper ? pattern::paper_coprime_step(o.layers) : pattern::coprime_step(o.layers));
  }
  fmt::print("\n{:>5}  {:>8}  {:>5}  {:>6}  {:>9}  {}\n", "layer", "alpha", "K", "keys/q",
             "attended", "offsets");
  std::vector<pattern::LayerMask> masks;
  for (size_t l = 0; l < layers.size(); ++l) {
    const auto& layer = layers[l];
    const std::string offsets_text =
        kind == pattern::AlphaSchedule::learned
            ? fmt::format("{::.2f} (init; interpolated)", layer.learned_distances)
            : fmt::format("{}", layer.offsets);
    const int64_t keys = std::min(layer.window, n) + static_cast<int64_t>(layer.offsets.size());
    fmt::print("{:>5}  {:>8.4f}  {:>5}  {:>6}  {:>8.4f}%  {}\n", l, layer.alpha,
               layer.offsets.size(), keys,
               100.0 * pattern::attended_fraction(n, layer.window, layer.offsets), offsets_text);
    masks.push_back({fmt::format("layer {}", l), layer.window, layer.offsets});
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
  cmd->add_option("--convention", options->convention,
                  "reach: reach's general form (window = distances 0..W-1, offsets W..R, "
                  "alpha from --alpha*); paper: the main paper's exact sets (window = distances "
                  "0..W, 15 Fibonacci rungs or powers of two up to T-1, alpha in [0.5, 1.5], "
                  "Python's round)")
      ->check(CLI::IsMember({"reach", "paper"}))
      ->capture_default_str();
  cmd->add_option("--window", options->window,
                  "Local window W (reach: W keys; paper: distances 0..W, e.g. 12)")
      ->check(positive())
      ->capture_default_str();
  auto* reach_option =
      cmd->add_option("--reach", options->reach, "Maximum offset R (reach convention)")
          ->check(positive())
          ->capture_default_str();
  cmd->add_option("--seq-len", options->seq_len,
                  "Sequence length T for the attended fraction (default: the reach; paper: 1024)")
      ->check(positive());
  cmd->add_flag("--json", options->json, "Print JSON: per layer alpha, offsets, every distance");
  cmd->add_option("--schedule", options->schedule, "Alpha across depth")
      ->check(CLI::IsMember({"fixed", "stagger", "coprime", "learned"}));
  cmd->add_option("--base", options->base, "Offset base sequence")
      ->check(CLI::IsMember({"fibonacci", "power_of_two"}));
  const std::array<CLI::Option*, 3> alpha_options{
      cmd->add_option("--alpha", options->alpha, "alpha for the fixed schedule (reach)"),
      cmd->add_option("--alpha-min", options->alpha_min, "Smallest alpha of the stagger (reach)"),
      cmd->add_option("--alpha-max", options->alpha_max, "Largest alpha of the stagger (reach)")};
  cmd->add_option("--png", options->png, "Draw the pattern of a few layers to this PNG file");
  cmd->add_option("--png-len", options->png_len, "Queries drawn in the PNG (<= 4096)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--png-layers", options->png_layers,
                  "Layers drawn (default: first, middle, last)")
      ->delimiter(',');
  const auto chunk = add_chunk_pattern_options(*cmd);
  cmd->callback([options, chunk, reach_option, alpha_options] {
    if (chunk->requested()) {
      run_chunk_pattern(*chunk, options->seq_len > 0 ? options->seq_len : options->reach);
      return;
    }
    if (options->convention == "paper") {
      // The paper fixes alpha's range and the reach (T - 1): a flag for them would be ignored.
      for (const auto* option : alpha_options) {
        if (option->count() > 0) {
          throw CLI::ValidationError(option->get_name(),
                                     "is not used by --convention paper (alpha in [0.5, 1.5])");
        }
      }
      if (reach_option->count() > 0) {
        throw CLI::ValidationError("--reach",
                                   "is not used by --convention paper (rungs up to seq_len - 1)");
      }
    }
    run_pattern(*options);
  });
}

}  // namespace reach::cli
