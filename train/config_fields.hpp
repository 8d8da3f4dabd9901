// Config keys, each declared once (name, the member it sets, help, valid values), driving the
// parsing of TOML text plus `--set section.key=value` overrides, range checks, the TOML a run
// saves, and the key list in every command's --help. An unknown key, a wrong type or a value
// out of range is a one-line error naming the key.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "model/model_config.hpp"
#include "train/optimizer_config.hpp"

namespace reach::train {

// A key whose value is one of a set of names, stored as a typed enum: set parses the name
// (throwing std::invalid_argument naming the key and the allowed names), get prints it.
struct ChoiceField {
  std::function<void(const std::string&)> set;
  std::function<std::string()> get;
  std::vector<std::string> names;
};
using ConfigField = std::variant<int64_t*, uint64_t*, int*, double*, std::string*, ChoiceField>;

// The valid values of a key: numbers in [min, max] (min itself excluded when min_excluded);
// strings one of `names` (when given) or whatever `check` accepts (it throws naming the key).
struct Valid {
  std::optional<double> min, max;
  bool min_excluded = false;
  std::vector<std::string> names;
  std::string describe;  // e.g. "auto, cpu, cuda or cuda:N", for keys with a check
  std::function<void(const std::string& key, const std::string& value)> check;
};
Valid at_least(double min);
Valid above(double min);                    // > min
Valid above_up_to(double min, double max);  // (min, max]
Valid one_of(std::vector<std::string> names);
Valid checked_by(std::string describe,  // a string `check` accepts
                 std::function<void(const std::string& key, const std::string& value)> check);

struct ConfigKey {
  std::string name;  // "section.key"
  ConfigField field;
  std::string help;
  Valid valid;
};

class ConfigKeys {
 public:
  ConfigKeys& add(std::string name, ConfigField field, std::string help, Valid valid = {});
  const ConfigKey* find(const std::string& name) const;
  const std::vector<ConfigKey>& all() const { return keys_; }

 private:
  std::vector<ConfigKey> keys_;
};

// Typed enum keys: the parser and the names come from model/model_config.hpp.
template <class E>
ChoiceField choice(E* target, E (*parse)(const std::string&), std::vector<std::string> names) {
  return {[target, parse](const std::string& name) { *target = parse(name); },
          [target] { return model::to_string(*target); }, std::move(names)};
}

// The keys both run configs share: run.out_dir / seed / threads, the optimiser's train.*
// keys and every model.* key (model.vocab_size 0 = from the data).
void add_run_keys(ConfigKeys& keys, std::string& out_dir, uint64_t& seed, int& threads);
void add_optimizer_keys(ConfigKeys& keys, OptimizerConfig& optimizer);
void add_model_keys(ConfigKeys& keys, model::ModelConfig& model);

// Parses TOML text (empty for defaults) and the overrides ("key=value", the value a TOML
// value or a bare word), then assigns every key and checks each against its Valid.
// `model.preset` (a string, if given) is handed to `keys_for_preset` first, which applies it
// and returns the known keys, so model.* keys override the preset. Throws
// std::invalid_argument naming the key.
void apply_config(
    const std::string& toml_text, const std::vector<std::string>& overrides,
    const std::function<ConfigKeys(const std::optional<std::string>& preset)>& keys_for_preset);

// Checks every key's value against its Valid (apply_config does it; for values set in code).
void check_values(const ConfigKeys& keys);
// Cross-key rule shared by both run configs: train.min_lr <= train.lr.
void check_optimizer(const OptimizerConfig& optimizer);

// TOML text of the keys' current values (plus model.preset), readable by apply_config.
std::string keys_to_toml(const ConfigKeys& keys, const std::string& preset);

// The --help listing: per section, each key with its default, help and valid values.
std::string keys_help(const ConfigKeys& keys, const std::string& preset);

std::string read_config_file(const std::string& path);

}  // namespace reach::train
