#include "train/config_fields.hpp"

#include <fmt/core.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

namespace reach::train {
namespace {

void assign(const std::string& key, ConfigField field, const toml::node& node) {
  auto type_error = [&](const char* expected) {
    throw std::invalid_argument("config key '" + key + "' must be " + expected);
  };
  if (const auto* choice = std::get_if<ChoiceField>(&field)) {
    if (!node.is_string()) type_error("a string");
    choice->set(node.value<std::string>().value());
    return;
  }
  std::visit(
      [&](auto target) {
        using T = std::remove_pointer_t<decltype(target)>;
        if constexpr (std::is_same_v<T, ChoiceField>) {
          // handled above
        } else if constexpr (std::is_same_v<T, std::string>) {
          // A bare integer is its text (--set eval.multipliers=64 means "64").
          if (node.is_integer()) {
            *target = std::to_string(node.value<int64_t>().value());
            return;
          }
          if (!node.is_string()) type_error("a string");
          *target = node.value<std::string>().value();
        } else if constexpr (std::is_same_v<T, double>) {
          if (!node.is_number()) type_error("a number");
          *target = node.value<double>().value();
        } else {
          if (!node.is_integer()) type_error("an integer");
          const int64_t v = node.value<int64_t>().value();
          if constexpr (std::is_unsigned_v<T>) {
            if (v < 0) type_error("a non-negative integer");
          }
          *target = static_cast<T>(v);
        }
      },
      field);
}

toml::table parse_with_overrides(const std::string& toml_text,
                                 const std::vector<std::string>& overrides) {
  toml::table table;
  try {
    table = toml::parse(toml_text);
  } catch (const toml::parse_error& e) {
    std::ostringstream where;
    where << e.source().begin;
    throw std::invalid_argument(
        fmt::format("config is not valid TOML: {} (at {})", e.description(), where.str()));
  }
  // Overrides are TOML values too: key=value parsed as "key = value" (bare words as strings).
  for (const auto& o : overrides) {
    const auto eq = o.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw std::invalid_argument("--set expects key=value, got '" + o + "'");
    }
    const std::string key = o.substr(0, eq), value = o.substr(eq + 1);
    toml::table parsed;
    try {
      parsed = toml::parse("v = " + value);
    } catch (const toml::parse_error&) {
      parsed = toml::parse("v = \"" + value + "\"");
    }
    const auto dot = key.find('.');
    if (dot == std::string::npos) {
      throw std::invalid_argument("--set key '" + key + "' must be section.key");
    }
    const std::string section = key.substr(0, dot), name = key.substr(dot + 1);
    if (!table.contains(section)) table.insert(section, toml::table{});
    auto* sub = table[section].as_table();
    if (!sub) throw std::invalid_argument("config section '" + section + "' is not a table");
    sub->insert_or_assign(name, *parsed["v"].node());
  }
  return table;
}

}  // namespace

Valid at_least(double min) {
  Valid v;
  v.min = min;
  return v;
}

Valid above(double min) {
  Valid v = at_least(min);
  v.min_excluded = true;
  return v;
}

Valid above_up_to(double min, double max) {
  Valid v = above(min);
  v.max = max;
  return v;
}

Valid one_of(std::vector<std::string> names) {
  Valid v;
  v.names = std::move(names);
  return v;
}

Valid checked_by(std::string describe,
                 std::function<void(const std::string& key, const std::string& value)> check) {
  Valid v;
  v.describe = std::move(describe);
  v.check = std::move(check);
  return v;
}

ConfigKeys& ConfigKeys::add(std::string name, ConfigField field, std::string help, Valid valid) {
  if (const auto* choice = std::get_if<ChoiceField>(&field); choice && valid.names.empty()) {
    valid.names = choice->names;
  }
  keys_.push_back({std::move(name), std::move(field), std::move(help), std::move(valid)});
  return *this;
}

const ConfigKey* ConfigKeys::find(const std::string& name) const {
  for (const auto& key : keys_) {
    if (key.name == name) return &key;
  }
  return nullptr;
}

void add_run_keys(ConfigKeys& keys, std::string& out_dir, uint64_t& seed, int& threads) {
  keys.add("run.out_dir", &out_dir, "run directory: config.toml, metrics.jsonl, weights")
      .add("run.seed", &seed, "seed of the initialisation and the batches")
      .add("run.threads", &threads, "CPU threads (0 = all cores)", at_least(0));
}

void add_optimizer_keys(ConfigKeys& keys, OptimizerConfig& o) {
  keys.add("train.lr", &o.lr, "peak learning rate (AdamW, betas 0.9 / 0.95)", above(0))
      .add("train.min_lr", &o.min_lr, "floor of the cosine decay (<= train.lr)", at_least(0))
      .add("train.warmup", &o.warmup, "steps of linear warmup", at_least(0))
      .add("train.weight_decay", &o.weight_decay, "decoupled weight decay on matrices", at_least(0))
      .add("train.grad_clip", &o.grad_clip, "gradient norm clip", above(0));
}

void add_model_keys(ConfigKeys& keys, model::ModelConfig& m) {
  using namespace model;
  keys.add("model.vocab_size", &m.vocab_size, "vocabulary (0 = the tokenizer's / the task's)",
           at_least(0))
      .add("model.layers", &m.layers, "blocks", at_least(1))
      .add("model.d_model", &m.d_model, "hidden size (divisible by model.heads)", at_least(1))
      .add("model.heads", &m.heads, "attention heads", at_least(1))
      .add("model.mlp_ratio", &m.mlp_ratio, "MLP hidden size / d_model", at_least(1))
      .add("model.attention",
           choice(&m.attention, parse_attention_family, attention_family_names()),
           "keys a query sees: all, its window, window + dilated offsets, or window + top-k "
           "chunk retrieval (docs/chunk_attention.md)")
      .add("model.schedule", choice(&m.schedule, parse_schedule, schedule_names()),
           "alpha across depth (fibonacci / power_of_two)")
      .add("model.alpha", &m.alpha, "alpha of the fixed schedule", above(0))
      .add("model.alpha_min", &m.alpha_min, "first layer's alpha (stagger, coprime, learned)",
           above(0))
      .add("model.alpha_max", &m.alpha_max, "last layer's alpha (stagger, coprime, learned)",
           above(0))
      .add("model.window", &m.window, "local window W", at_least(1))
      .add("model.reach", &m.reach, "largest offset R (0 = the training length)", at_least(0))
      .add("model.positions", choice(&m.positions, parse_positions, positions_names()),
           "positions: RoPE, ALiBi, none, or NAPE (half NoPE, half ALiBi)")
      .add("model.rope_base", &m.rope_base, "RoPE base (theta)", above(0))
      .add("model.normalizer", choice(&m.normalizer, parse_normalizer, normalizer_names()),
           "scores to weights (docs/entmax.md)")
      .add("model.entmax_alpha", &m.entmax_alpha, "alpha of entmax / asentmax", above_up_to(1, 2))
      .add("model.entmax_alpha_mode",
           choice(&m.entmax_alpha_mode, parse_entmax_alpha, entmax_alpha_names()),
           "entmax / asentmax alpha: fixed, or learned per head (starts at model.entmax_alpha)")
      .add("model.entmax_scale", choice(&m.entmax_scale, parse_entmax_scale, entmax_scale_names()),
           "asentmax beta, gamma: learned per head, or per query from the hidden state")
      .add("model.chunk_size", &m.chunk_size, "chunk: tokens per chunk S", at_least(1))
      .add("model.chunk_top_k", &m.chunk_top_k, "chunk: most chunks a query reads (k)", at_least(1))
      .add("model.chunk_encoder_layers", &m.chunk_encoder_layers,
           "chunk: bidirectional chunk-encoder layers (0 = linear: no encoder, mean landmarks)",
           at_least(0))
      .add("model.chunk_encoder_mlp_ratio", &m.chunk_encoder_mlp_ratio,
           "chunk: encoder MLP hidden size / d_model", at_least(1))
      .add("model.chunk_landmark",
           choice(&m.chunk_landmark, parse_chunk_landmark, chunk_landmark_names()),
           "chunk: landmark = the encoder's output at a CLS token, the projected mean of the "
           "chunk, or the mean of its keys (mean_keys)")
      .add("model.chunk_scoring",
           choice(&m.chunk_scoring, parse_chunk_scoring, chunk_scoring_names()),
           "chunk: retrieval = a retrieval query scores the landmarks; moba = the token query "
           "scores each chunk's mean key")
      .add("model.chunk_residual",
           choice(&m.chunk_residual, parse_chunk_residual, chunk_residual_names()),
           "chunk: retrieved output into the MLP input only (bypass) or the residual stream")
      .add("model.chunk_sparsity",
           choice(&m.chunk_sparsity, parse_chunk_sparsity, chunk_sparsity_names()),
           "chunk: enforced = read ceil(chunk_fraction x C) of C candidates (<= k); none = "
           "min(C, k)")
      .add("model.chunk_fraction", &m.chunk_fraction,
           "chunk: share of the candidate chunks read under enforced sparsity", above_up_to(0, 1))
      .add("model.chunk_weighting",
           choice(&m.chunk_weighting, parse_chunk_weighting, chunk_weighting_names()),
           "chunk: fuse the chunks' outputs by a softmax of their scores or stick-breaking")
      .add("model.chunk_every", &m.chunk_every,
           "chunk: from the middle layer up, every n-th layer retrieves", at_least(1))
      .add("model.chunk_local", choice(&m.chunk_local, parse_chunk_local, chunk_local_names()),
           "chunk: the layers that do not retrieve: window, or dilated (window + the family's "
           "offsets scaled by the layer's alpha under model.schedule)")
      .add("model.kv_heads", &m.kv_heads,
           "K/V heads, each shared by heads / kv_heads query heads (GQA; 0 = model.heads)",
           at_least(0))
      .add("model.norm", choice(&m.norm, parse_norm, norm_names()),
           "the blocks' normalisation: LayerNorm or RMSNorm")
      .add("model.mlp", choice(&m.mlp, parse_mlp, mlp_names()), "MLP: GELU or SwiGLU")
      .add("model.mlp_hidden", &m.mlp_hidden,
           "MLP hidden width (0 = mlp_ratio * d_model for GELU, 8/3 d_model rounded up to even "
           "for SwiGLU)",
           at_least(0))
      .add("model.bias",
           ChoiceField{[&m](const std::string& v) {
                         if (v != "true" && v != "false") {
                           throw std::invalid_argument("model.bias must be true or false, got '" +
                                                       v + "'");
                         }
                         m.bias = v == "true";
                       },
                       [&m] { return std::string(m.bias ? "true" : "false"); },
                       {"true", "false"}},
           "biases in the MLP's linear layers")
      .add("model.init_std", &m.init_std,
           "std of the N(0, std) initial weights (residual projections / sqrt(2 layers))", above(0))
      .add("model.convention", choice(&m.convention, parse_convention, convention_names()),
           "window and offsets: reach's general form, or the main paper's exact one "
           "(docs/paper_convention.md)");
}

namespace {

std::string number_text(double v) {
  if (v == std::floor(v) && std::abs(v) < 1e15) return fmt::format("{}", static_cast<int64_t>(v));
  return fmt::format("{}", v);
}

// "a, b, c or d"
std::string alternatives(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += i + 1 == names.size() ? " or " : ", ";
    out += names[i];
  }
  return out;
}

// What a key accepts, in words: ">= 1", "in (1, 2]", "auto, fp32 or bf16"; empty: anything.
std::string describe(const Valid& v) {
  if (!v.describe.empty()) return v.describe;
  if (!v.names.empty()) return alternatives(v.names);
  if (v.min && v.max) {
    return fmt::format("in {}{}, {}]", v.min_excluded ? "(" : "[", number_text(*v.min),
                       number_text(*v.max));
  }
  if (v.min) return fmt::format("{} {}", v.min_excluded ? ">" : ">=", number_text(*v.min));
  if (v.max) return fmt::format("<= {}", number_text(*v.max));
  return {};
}

std::string value_text(const ConfigField& field) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::remove_pointer_t<std::decay_t<decltype(v)>>;
        if constexpr (std::is_same_v<T, ChoiceField>) {
          return fmt::format("\"{}\"", v.get());
        } else if constexpr (std::is_same_v<T, std::string>) {
          return fmt::format("\"{}\"", *v);
        } else {
          return fmt::format("{}", *v);
        }
      },
      field);
}

void check_value(const ConfigKey& key) {
  const auto& v = key.valid;
  auto fail = [&](const std::string& got) {
    throw std::invalid_argument(key.name + " must be " + describe(v) + ", got " + got);
  };
  std::visit(
      [&](const auto& target) {
        using T = std::remove_pointer_t<std::decay_t<decltype(target)>>;
        if constexpr (std::is_same_v<T, std::string>) {
          if (v.check) v.check(key.name, *target);
          if (!v.names.empty() &&
              std::find(v.names.begin(), v.names.end(), *target) == v.names.end()) {
            fail(fmt::format("'{}'", *target));
          }
        } else if constexpr (!std::is_same_v<T, ChoiceField>) {
          const auto x = static_cast<double>(*target);
          const bool low = v.min && (v.min_excluded ? !(x > *v.min) : !(x >= *v.min));
          const bool high = v.max && !(x <= *v.max);
          if (low || high || std::isnan(x)) fail(fmt::format("{}", *target));
        }
      },
      key.field);
}

}  // namespace

void check_values(const ConfigKeys& keys) {
  for (const auto& key : keys.all()) check_value(key);
}

void check_optimizer(const OptimizerConfig& o) {
  if (o.min_lr > o.lr) {
    throw std::invalid_argument(fmt::format(
        "train.min_lr ({}) must be <= train.lr ({}): the cosine decays from lr to min_lr", o.min_lr,
        o.lr));
  }
}

void apply_config(
    const std::string& toml_text, const std::vector<std::string>& overrides,
    const std::function<ConfigKeys(const std::optional<std::string>& preset)>& keys_for_preset) {
  const toml::table table = parse_with_overrides(toml_text, overrides);
  std::optional<std::string> preset;
  if (auto name = table["model"]["preset"].value<std::string>()) {
    preset = *name;
  } else if (table["model"]["preset"]) {
    throw std::invalid_argument("config key 'model.preset' must be a string");
  }
  const ConfigKeys known = keys_for_preset(preset);
  for (const auto& [section, node] : table) {
    const auto* sub = node.as_table();
    if (!sub) {
      throw std::invalid_argument("config key '" + std::string(section.str()) +
                                  "' must be a [section]");
    }
    for (const auto& [name, value] : *sub) {
      const std::string key = std::string(section.str()) + "." + std::string(name.str());
      if (key == "model.preset") continue;
      const auto* declared = known.find(key);
      if (!declared) throw std::invalid_argument("unknown config key '" + key + "'");
      assign(key, declared->field, value);
    }
  }
  check_values(known);
}

std::string keys_to_toml(const ConfigKeys& keys, const std::string& preset) {
  std::map<std::string, toml::table> sections;
  for (const auto& key : keys.all()) {
    const auto dot = key.name.find('.');
    auto& section = sections[key.name.substr(0, dot)];
    const std::string name = key.name.substr(dot + 1);
    std::visit(
        [&](const auto& v) {
          using T = std::remove_pointer_t<std::decay_t<decltype(v)>>;
          if constexpr (std::is_same_v<T, ChoiceField>) {
            section.insert(name, v.get());
          } else if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, double>) {
            section.insert(name, *v);
          } else {
            section.insert(name, static_cast<int64_t>(*v));
          }
        },
        key.field);
  }
  sections["model"].insert("preset", preset);
  toml::table root;
  for (auto& [name, table] : sections) root.insert(name, table);
  std::ostringstream out;
  out << root << "\n";
  return out.str();
}

std::string keys_help(const ConfigKeys& keys, const std::string& preset) {
  std::string out;
  std::string section;
  auto line = [&](const std::string& name, const std::string& value, const std::string& help,
                  const std::string& valid) {
    std::string text = fmt::format("  {} = {}", name, value);
    text = fmt::format("{:<34} {}", text, help);
    if (!valid.empty()) text += fmt::format(" ({})", valid);
    out += fmt::format("{}\n", text);
  };
  for (const auto& key : keys.all()) {
    const auto dot = key.name.find('.');
    const std::string s = key.name.substr(0, dot);
    if (s != section) {
      out += fmt::format("{}[{}]\n", section.empty() ? "" : "\n", s);
      section = s;
      if (s == "model") {
        line("preset", fmt::format("\"{}\"", preset), "applied before any other model.* key",
             "paper, tiny or micro");
      }
    }
    line(key.name.substr(dot + 1), value_text(key.field), key.help, describe(key.valid));
  }
  return out;
}

std::string read_config_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    throw std::invalid_argument("config file '" + path +
                                "' is a directory (expected a TOML file, e.g. configs/*.toml)");
  }
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("cannot read config file '" + path + "'");
  std::ostringstream text;
  text << in.rdbuf();
  // A regular file with no keys is a mistake (a wrong or truncated file), not a request for
  // a default run; /dev/null (not a regular file) still means "the defaults plus --set".
  if (std::filesystem::is_regular_file(path, ec)) {
    std::istringstream lines(text.str());
    std::string line;
    bool has_content = false;
    while (!has_content && std::getline(lines, line)) {
      const auto first = line.find_first_not_of(" \t\r");
      has_content = first != std::string::npos && line[first] != '#';
    }
    if (!has_content) {
      throw std::invalid_argument(
          "config file '" + path +
          "' is empty (no keys); pass /dev/null to use the defaults plus --set overrides");
    }
  }
  return text.str();
}

}  // namespace reach::train
