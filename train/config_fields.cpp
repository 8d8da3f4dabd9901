#include "train/config_fields.hpp"

#include <fmt/core.h>
#include <toml++/toml.h>

#include <fstream>
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

template <class E>
ChoiceField choice(E* target, E (*parse)(const std::string&)) {
  return {[target, parse](const std::string& name) { *target = parse(name); },
          [target] { return model::to_string(*target); }};
}

}  // namespace

void add_model_fields(ConfigFields& fields, model::ModelConfig& m) {
  fields.insert({
      {"model.vocab_size", &m.vocab_size},
      {"model.layers", &m.layers},
      {"model.d_model", &m.d_model},
      {"model.heads", &m.heads},
      {"model.mlp_ratio", &m.mlp_ratio},
      {"model.attention", choice(&m.attention, model::parse_attention_family)},
      {"model.schedule", choice(&m.schedule, model::parse_schedule)},
      {"model.alpha", &m.alpha},
      {"model.alpha_min", &m.alpha_min},
      {"model.alpha_max", &m.alpha_max},
      {"model.window", &m.window},
      {"model.reach", &m.reach},
      {"model.positions", choice(&m.positions, model::parse_positions)},
      {"model.rope_base", &m.rope_base},
      {"model.normalizer", choice(&m.normalizer, model::parse_normalizer)},
      {"model.entmax_alpha", &m.entmax_alpha},
  });
}

void apply_config(const std::string& toml_text, const std::vector<std::string>& overrides,
                  const std::function<ConfigFields(const std::optional<std::string>& preset)>&
                      fields_for_preset) {
  const toml::table table = parse_with_overrides(toml_text, overrides);
  std::optional<std::string> preset;
  if (auto name = table["model"]["preset"].value<std::string>()) {
    preset = *name;
  } else if (table["model"]["preset"]) {
    throw std::invalid_argument("config key 'model.preset' must be a string");
  }
  const ConfigFields known = fields_for_preset(preset);
  for (const auto& [section, node] : table) {
    const auto* sub = node.as_table();
    if (!sub) {
      throw std::invalid_argument("config key '" + std::string(section.str()) +
                                  "' must be a [section]");
    }
    for (const auto& [name, value] : *sub) {
      const std::string key = std::string(section.str()) + "." + std::string(name.str());
      if (key == "model.preset") continue;
      auto it = known.find(key);
      if (it == known.end()) throw std::invalid_argument("unknown config key '" + key + "'");
      assign(key, it->second, value);
    }
  }
}

std::string fields_to_toml(const ConfigFields& fields, const std::string& preset) {
  std::map<std::string, toml::table> sections;
  for (const auto& [key, field] : fields) {
    const auto dot = key.find('.');
    auto& section = sections[key.substr(0, dot)];
    const std::string name = key.substr(dot + 1);
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
        field);
  }
  sections["model"].insert("preset", preset);
  toml::table root;
  for (auto& [name, table] : sections) root.insert(name, table);
  std::ostringstream out;
  out << root << "\n";
  return out.str();
}

std::string read_config_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("cannot read config file '" + path + "'");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace reach::train
