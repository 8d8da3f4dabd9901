// Typed config keys shared by the run configurations (`reach train`, `reach tasks`): TOML
// text plus `--set section.key=value` overrides applied to a map of known keys. An unknown
// key or a wrong type is a one-line error naming the key.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "model/model_config.hpp"

namespace reach::train {

// A key whose value is one of a set of names, stored as a typed enum: set parses the name
// (throwing std::invalid_argument naming the key and the allowed names), get prints it.
struct ChoiceField {
  std::function<void(const std::string&)> set;
  std::function<std::string()> get;
};
using ConfigField = std::variant<int64_t*, uint64_t*, int*, double*, std::string*, ChoiceField>;
using ConfigFields = std::map<std::string, ConfigField>;

// Adds the model.* keys (all of ModelConfig) pointing into `model`.
void add_model_fields(ConfigFields& fields, model::ModelConfig& model);

// Parses TOML text (empty for defaults) and the overrides ("key=value", the value a TOML
// value or a bare word), then assigns every key. `model.preset` (a string, if given) is
// handed to `fields_for_preset` first, which applies it and returns the known keys, so
// model.* keys override the preset. Throws std::invalid_argument naming the key.
void apply_config(
    const std::string& toml_text, const std::vector<std::string>& overrides,
    const std::function<ConfigFields(const std::optional<std::string>& preset)>& fields_for_preset);

// TOML text of the fields' current values (plus model.preset), readable by apply_config.
std::string fields_to_toml(const ConfigFields& fields, const std::string& preset);

std::string read_config_file(const std::string& path);

}  // namespace reach::train
