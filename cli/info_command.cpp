// `reach info CHECKPOINT [--json]`: what a checkpoint holds, without evaluating it: parameter
// count, tokenizer, training steps and tokens, the attention pattern of every layer, and the
// full config.
#include <fmt/core.h>
#include <fmt/ranges.h>

#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/checkpoint_choice.hpp"
#include "cli/commands.hpp"
#include "cli/model_label.hpp"
#include "pattern/alpha_schedule.hpp"
#include "pattern/dilated_offsets.hpp"
#include "train/checkpoint.hpp"

namespace reach::cli {
namespace {

struct InfoOptions {
  std::string checkpoint;
  bool json = false;
};

struct LayerPattern {
  double alpha = 0;             // 0: no dilation (dense, window)
  std::vector<double> offsets;  // distances beyond the window (fractional when learned)
  int64_t keys_per_query = 0;   // at a query far from the start; 0 = all earlier (dense)
};

// Each layer's keys, from the config through pattern/ (the definitions the model uses), with
// the learned alphas read from the weights.
std::vector<LayerPattern> layer_patterns(const train::Checkpoint& ckpt) {
  const auto& m = ckpt.config.model;
  std::vector<LayerPattern> layers(static_cast<size_t>(m.layers));
  if (m.attention == model::AttentionFamily::dense) return layers;
  for (auto& l : layers) l.keys_per_query = m.window;
  if (!model::is_dilated(m.attention)) return layers;
  const pattern::ScheduleSpec schedule{m.schedule, m.layers, m.alpha, m.alpha_min, m.alpha_max};
  auto alphas = pattern::layer_alphas(schedule);
  const bool learned = schedule.kind == pattern::AlphaSchedule::learned;
  if (learned) {
    const auto params = ckpt.model->named_parameters();
    for (int64_t l = 0; l < m.layers; ++l) {
      const auto* theta = params.find(fmt::format("blocks.{}.attn.theta", l));
      if (theta) {
        alphas[static_cast<size_t>(l)] = torch::softplus(theta->to(torch::kFloat64)).item<double>();
      }
    }
  }
  for (int64_t l = 0; l < m.layers; ++l) {
    auto& layer = layers[static_cast<size_t>(l)];
    layer.alpha = alphas[static_cast<size_t>(l)];
    const pattern::DilationSpec spec{model::offset_base(m.attention), layer.alpha, m.window,
                                     m.reach};
    if (learned) {
      layer.offsets = pattern::fractional_offsets(spec).distances;
    } else {
      for (const auto d : pattern::integer_offsets(spec))
        layer.offsets.push_back(static_cast<double>(d));
    }
    layer.keys_per_query = m.window + static_cast<int64_t>(layer.offsets.size());
  }
  return layers;
}

std::string offsets_text(const std::vector<double>& offsets) {
  std::vector<std::string> items;
  for (const double d : offsets)
    items.push_back(d == std::floor(d) ? fmt::format("{:.0f}", d) : fmt::format("{:.2f}", d));
  return fmt::format("{}", fmt::join(items, ", "));
}

void run_info(const InfoOptions& o) {
  auto chosen = load_chosen_checkpoint(o.checkpoint, "info");
  const std::string dir = chosen.dir;
  const auto ckpt = std::move(chosen.checkpoint);
  const auto tokenizer = data::load_tokenizer(dir);
  const auto& c = ckpt.config;
  const int64_t parameters = model::parameter_count(*ckpt.model);
  const int64_t tokens = ckpt.step * c.batch * c.seq_len;
  const auto layers = layer_patterns(ckpt);
  if (o.json) {
    nlohmann::json j{
        {"checkpoint", dir},
        {"model", model_label(c.model)},
        {"parameters", parameters},
        {"tokenizer", {{"kind", tokenizer->kind()}, {"vocab_size", tokenizer->vocab_size()}}},
        {"steps", ckpt.step},
        {"tokens", tokens},
        {"corpus", c.corpus},
        {"seq_len", c.seq_len},
        {"config_toml", train::to_toml(c)}};
    nlohmann::json per_layer = nlohmann::json::array();
    for (size_t l = 0; l < layers.size(); ++l) {
      per_layer.push_back(
          {{"layer", l},
           {"alpha", layers[l].alpha},
           {"window", c.model.attention == model::AttentionFamily::dense ? 0 : c.model.window},
           {"offsets", layers[l].offsets},
           {"keys_per_query", layers[l].keys_per_query}});
    }
    j["layers"] = per_layer;
    fmt::print("{}\n", j.dump(2));
    return;
  }
  fmt::print("checkpoint  {}\n", dir);
  fmt::print("model       {} ({} layers, d_model {}, {} heads, {} parameters)\n",
             model_label(c.model), c.model.layers, c.model.d_model, c.model.heads, parameters);
  fmt::print("tokenizer   {}, vocabulary {}\n", tokenizer->kind(), tokenizer->vocab_size());
  fmt::print("trained     {} steps x {} x {} tokens = {} tokens on corpus '{}'\n", ckpt.step,
             c.batch, c.seq_len, tokens, c.corpus);
  fmt::print("attention   ");
  if (c.model.attention == model::AttentionFamily::dense) {
    fmt::print("dense causal in every layer (a query sees every earlier key)\n");
  } else {
    fmt::print("window W = {}{}\n", c.model.window,
               !model::is_dilated(c.model.attention)
                   ? ""
                   : fmt::format(", {} offsets up to R = {}, schedule {}",
                                 model::to_string(c.model.attention), c.model.reach,
                                 model::to_string(c.model.schedule)));
    fmt::print(
        "\n| layer | alpha | keys per query | offsets beyond the window |\n"
        "| ---: | ---: | ---: | --- |\n");
    for (size_t l = 0; l < layers.size(); ++l) {
      fmt::print("| {} | {:.4f} | {} | {} |\n", l, layers[l].alpha, layers[l].keys_per_query,
                 offsets_text(layers[l].offsets));
    }
  }
  fmt::print("\nconfig ({}/config.toml):\n{}", dir, train::to_toml(c));
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto o = std::make_shared<InfoOptions>();
  auto* cmd = app.add_subcommand(
      "info",
      "What a checkpoint holds: parameters, tokenizer, training steps and tokens, each layer's "
      "attention pattern (alpha, offsets, keys per query), config");
  cmd->add_option("checkpoint", o->checkpoint, "Checkpoint directory (or a run's out_dir)")
      ->required();
  cmd->add_flag("--json", o->json, "Print JSON instead of text");
  cmd->callback([o] { run_info(*o); });
}

}  // namespace reach::cli
