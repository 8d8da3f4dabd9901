#include "experiment/experiment_spec.hpp"

#include <fmt/core.h>
#include <toml++/toml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

namespace reach::experiment {
namespace fs = std::filesystem;
namespace {

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw std::invalid_argument(fmt::format("experiment: {}: {}", where, what));
}

void check_keys(const toml::table& table, const std::set<std::string>& known,
                const std::string& where) {
  for (const auto& [key, node] : table) {
    if (!known.contains(std::string(key.str()))) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      fail(where, fmt::format("unknown key '{}' (known: {})", key.str(), list));
    }
  }
}

std::string string_value(const toml::table& table, const char* key, const std::string& where,
                         const std::string& fallback) {
  const auto* node = table.get(key);
  if (!node) return fallback;
  if (!node->is_string()) fail(where, fmt::format("'{}' must be a string", key));
  return std::string(*node->value<std::string>());
}

std::vector<std::string> strings(const toml::table& table, const char* key,
                                 const std::string& where) {
  std::vector<std::string> out;
  const auto* node = table.get(key);
  if (!node) return out;
  const auto* array = node->as_array();
  if (!array) fail(where, fmt::format("'{}' must be an array of strings", key));
  for (const auto& item : *array) {
    if (!item.is_string()) fail(where, fmt::format("'{}' must be an array of strings", key));
    out.emplace_back(*item.value<std::string>());
  }
  return out;
}

std::vector<int64_t> integers(const toml::table& table, const char* key, const std::string& where,
                              int64_t minimum) {
  std::vector<int64_t> out;
  const auto* node = table.get(key);
  if (!node) return out;
  const auto* array = node->as_array();
  if (!array || array->empty()) fail(where, fmt::format("'{}' must be a non-empty array", key));
  for (const auto& item : *array) {
    const auto value = item.value<int64_t>();
    if (!item.is_integer() || !value || *value < minimum) {
      fail(where, fmt::format("'{}' must hold integers >= {}", key, minimum));
    }
    out.push_back(*value);
  }
  return out;
}

std::vector<uint64_t> seeds_of(const toml::table& table, const std::string& where) {
  std::vector<uint64_t> out;
  for (const int64_t s : integers(table, "seeds", where, 0))
    out.push_back(static_cast<uint64_t>(s));
  std::set<uint64_t> unique(out.begin(), out.end());
  if (unique.size() != out.size()) fail(where, "'seeds' has a seed twice");
  return out;
}

std::string resolve(const std::string& path, const std::string& base_dir) {
  if (path.empty() || fs::path(path).is_absolute()) return path;
  return (fs::path(base_dir) / path).lexically_normal().string();
}

bool valid_name(const std::string& name) {
  if (name.empty() || name.size() > 100) return false;
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return name != "." && name != "..";
}

}  // namespace

ExperimentSpec parse_experiment(const std::string& toml_text, const std::string& base_dir,
                                const std::vector<std::string>& extra_overrides) {
  toml::table root;
  try {
    root = toml::parse(toml_text);
  } catch (const toml::parse_error& e) {
    std::ostringstream where;
    where << e.source().begin;
    fail("TOML", fmt::format("{} (at {})", e.description(), where.str()));
  }
  check_keys(root, {"experiment", "run"}, "top level");
  ExperimentSpec spec;
  const toml::table empty;
  const auto* header_node = root.get("experiment");
  if (header_node && !header_node->is_table()) fail("[experiment]", "must be a table");
  const toml::table& header = header_node ? *header_node->as_table() : empty;
  check_keys(
      header,
      {"name", "out_dir", "config", "set", "seeds", "multipliers", "max_tokens", "reference"},
      "[experiment]");
  spec.name = string_value(header, "name", "[experiment]", spec.name);
  spec.out_dir = string_value(header, "out_dir", "[experiment]", spec.out_dir);
  if (spec.out_dir.empty()) fail("[experiment]", "'out_dir' must not be empty");
  spec.reference_name = string_value(header, "reference", "[experiment]", spec.reference_name);
  const std::string default_config =
      resolve(string_value(header, "config", "[experiment]", ""), base_dir);
  const auto shared = strings(header, "set", "[experiment]");
  auto default_seeds = seeds_of(header, "[experiment]");
  if (default_seeds.empty()) default_seeds = {1};
  if (const auto m = integers(header, "multipliers", "[experiment]", 1); !m.empty()) {
    spec.multipliers = m;
  }
  if (const auto* node = header.get("max_tokens")) {
    const auto value = node->value<int64_t>();
    if (!node->is_integer() || !value || *value < 1) {
      fail("[experiment]", "'max_tokens' must be an integer >= 1");
    }
    spec.max_tokens = *value;
  }

  const auto* runs_node = root.get("run");
  if (!runs_node || !runs_node->is_array_of_tables() || runs_node->as_array()->empty()) {
    fail("top level", "no runs: add at least one [[run]] table");
  }
  std::set<std::string> names;
  size_t index = 0;
  for (const auto& node : *runs_node->as_array()) {
    const auto& table = *node.as_table();
    const std::string where = fmt::format("[[run]] #{}", ++index);
    check_keys(table, {"name", "config", "set", "seeds", "reference"}, where);
    ExperimentRun run;
    run.name = string_value(table, "name", where, "");
    if (!valid_name(run.name)) {
      fail(where, fmt::format("'name' must be 1-100 characters of A-Z a-z 0-9 . _ - (got '{}')",
                              run.name));
    }
    if (!names.insert(run.name).second) fail(where, fmt::format("run '{}' twice", run.name));
    const std::string named = fmt::format("run '{}'", run.name);
    run.config_path = table.contains("config")
                          ? resolve(string_value(table, "config", named, ""), base_dir)
                          : default_config;
    if (!run.config_path.empty() && !fs::is_regular_file(run.config_path)) {
      fail(named, fmt::format("config '{}' is not a file", run.config_path));
    }
    run.overrides = shared;
    for (auto& o : strings(table, "set", named)) run.overrides.push_back(std::move(o));
    run.overrides.insert(run.overrides.end(), extra_overrides.begin(), extra_overrides.end());
    run.seeds = seeds_of(table, named);
    if (run.seeds.empty()) run.seeds = default_seeds;
    if (const auto* ref = table.get("reference")) {
      const auto* array = ref->as_array();
      if (!array || array->size() != spec.multipliers.size()) {
        fail(named, fmt::format("'reference' must hold one number per multiplier ({})",
                                spec.multipliers.size()));
      }
      for (const auto& item : *array) {
        const auto value = item.value<double>();
        if (!value || !(*value >= 0)) fail(named, "'reference' must hold numbers >= 0");
        run.reference.push_back(*value);
      }
    }
    spec.runs.push_back(std::move(run));
  }
  return spec;
}

ExperimentSpec load_experiment(const std::string& path,
                               const std::vector<std::string>& extra_overrides) {
  if (!fs::is_regular_file(path)) {
    throw std::invalid_argument(fmt::format("experiment: '{}' is not a file", path));
  }
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) throw std::invalid_argument(fmt::format("experiment: cannot read '{}'", path));
  return parse_experiment(text.str(), fs::path(path).parent_path().string(), extra_overrides);
}

ExperimentSpec select_runs(const ExperimentSpec& spec, const std::vector<std::string>& names,
                           const std::vector<uint64_t>& seeds) {
  std::set<std::string> wanted;
  for (const auto& name : names) {
    const bool known = std::any_of(spec.runs.begin(), spec.runs.end(),
                                   [&](const ExperimentRun& run) { return run.name == name; });
    if (!known) {
      std::string all;
      for (const auto& run : spec.runs) all += (all.empty() ? "" : ", ") + run.name;
      throw std::invalid_argument(fmt::format(
          "experiment: no run named '{}' in '{}' (its runs: {})", name, spec.name, all));
    }
    if (!wanted.insert(name).second) {
      throw std::invalid_argument(fmt::format("experiment: run '{}' named twice", name));
    }
  }
  std::set<uint64_t> distinct(seeds.begin(), seeds.end());
  if (distinct.size() != seeds.size()) {
    throw std::invalid_argument("experiment: a seed is named twice");
  }
  ExperimentSpec selected = spec;
  selected.runs.clear();
  for (const auto& run : spec.runs) {
    if (!wanted.empty() && !wanted.contains(run.name)) continue;
    selected.runs.push_back(run);
    if (!seeds.empty()) selected.runs.back().seeds = seeds;
  }
  return selected;
}

std::string run_directory(const ExperimentSpec& spec, const ExperimentRun& run, uint64_t seed) {
  return (fs::path(spec.out_dir) / fmt::format("{}-seed{}", run.name, seed)).string();
}

}  // namespace reach::experiment
