#include "train/train_config.hpp"

#include <fmt/core.h>
#include <toml++/toml.h>

#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <stdexcept>
#include <variant>

namespace reach::train {
namespace {

using Field = std::variant<int64_t*, uint64_t*, int*, double*, std::string*>;

std::map<std::string, Field> fields(TrainConfig& c) {
  return {
      {"run.out_dir", &c.out_dir},
      {"run.seed", &c.seed},
      {"run.threads", &c.threads},
      {"data.corpus", &c.corpus},
      {"data.tokenizer", &c.tokenizer},
      {"data.cache_dir", &c.cache_dir},
      {"data.seq_len", &c.seq_len},
      {"data.batch", &c.batch},
      {"model.vocab_size", &c.model.vocab_size},
      {"model.layers", &c.model.layers},
      {"model.d_model", &c.model.d_model},
      {"model.heads", &c.model.heads},
      {"model.mlp_ratio", &c.model.mlp_ratio},
      {"model.attention", &c.model.attention},
      {"model.schedule", &c.model.schedule},
      {"model.alpha", &c.model.alpha},
      {"model.alpha_min", &c.model.alpha_min},
      {"model.alpha_max", &c.model.alpha_max},
      {"model.window", &c.model.window},
      {"model.reach", &c.model.reach},
      {"model.positions", &c.model.positions},
      {"model.rope_base", &c.model.rope_base},
      {"train.steps", &c.steps},
      {"train.lr", &c.lr},
      {"train.min_lr", &c.min_lr},
      {"train.warmup", &c.warmup},
      {"train.weight_decay", &c.weight_decay},
      {"train.grad_clip", &c.grad_clip},
      {"train.log_every", &c.log_every},
      {"train.eval_every", &c.eval_every},
      {"train.eval_tokens", &c.eval_tokens},
      {"train.checkpoint_every", &c.checkpoint_every},
      {"train.device", &c.device},
      {"train.precision", &c.precision},
      {"train.peak_tflops", &c.peak_tflops},
      {"train.profile_steps", &c.profile_steps},
  };
}

void assign(const std::string& key, Field field, const toml::node& node) {
  auto type_error = [&](const char* expected) {
    throw std::invalid_argument("config key '" + key + "' must be " + expected);
  };
  std::visit(
      [&](auto* target) {
        using T = std::remove_pointer_t<decltype(target)>;
        if constexpr (std::is_same_v<T, std::string>) {
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

void validate(const TrainConfig& c) {
  if (c.seq_len < 2) throw std::invalid_argument("data.seq_len must be >= 2");
  if (c.batch < 1) throw std::invalid_argument("data.batch must be >= 1");
  if (c.steps < 1) throw std::invalid_argument("train.steps must be >= 1");
  if (!(c.lr > 0)) throw std::invalid_argument("train.lr must be > 0");
  if (c.min_lr < 0 || c.min_lr > c.lr)
    throw std::invalid_argument("train.min_lr must be in [0, lr]");
  if (c.warmup < 0) throw std::invalid_argument("train.warmup must be >= 0");
  if (c.weight_decay < 0) throw std::invalid_argument("train.weight_decay must be >= 0");
  if (!(c.grad_clip > 0)) throw std::invalid_argument("train.grad_clip must be > 0");
  if (c.log_every < 1 || c.eval_every < 1 || c.checkpoint_every < 1) {
    throw std::invalid_argument("train.log_every, eval_every and checkpoint_every must be >= 1");
  }
  if (c.eval_tokens < c.seq_len)
    throw std::invalid_argument("train.eval_tokens must be >= seq_len");
  if (c.threads < 0) throw std::invalid_argument("run.threads must be >= 0");
  const bool cuda_index = c.device.starts_with("cuda:") && c.device.size() > 5 &&
                          c.device.find_first_not_of("0123456789", 5) == std::string::npos;
  if (c.device != "auto" && c.device != "cpu" && c.device != "cuda" && !cuda_index) {
    throw std::invalid_argument("train.device must be auto, cpu, cuda or cuda:N, got '" + c.device +
                                "'");
  }
  if (c.precision != "auto" && c.precision != "fp32" && c.precision != "bf16") {
    throw std::invalid_argument("train.precision must be auto, fp32 or bf16, got '" + c.precision +
                                "'");
  }
  if (c.precision == "bf16" && c.device == "cpu") {
    throw std::invalid_argument(
        "train.precision = 'bf16' needs a CUDA device (train.device = cuda or auto); the CPU "
        "trains in fp32");
  }
  if (!(c.peak_tflops >= 0)) throw std::invalid_argument("train.peak_tflops must be >= 0");
  if (c.profile_steps < 0) throw std::invalid_argument("train.profile_steps must be >= 0");
  if (c.model.vocab_size < 0) throw std::invalid_argument("model.vocab_size must be >= 0");
  auto resolved = c.model;
  if (resolved.vocab_size == 0) resolved.vocab_size = 1;  // resolved from the tokenizer later
  model::validate(resolved);
}

}  // namespace

TrainConfig parse_train_config(const std::string& toml_text,
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

  TrainConfig config;
  // The preset first, so model.* keys override it.
  if (auto preset = table["model"]["preset"].value<std::string>()) {
    config.preset = *preset;
  } else if (table["model"]["preset"]) {
    throw std::invalid_argument("config key 'model.preset' must be a string");
  }
  config.model = model::preset(config.preset);
  config.model.vocab_size = 0;
  auto known = fields(config);
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
  validate(config);
  if (config.model.reach == 0) config.model.reach = std::max(config.seq_len, config.model.window);
  return config;
}

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("cannot read config file '" + path + "'");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_train_config(text.str(), overrides);
}

std::string to_toml(const TrainConfig& config) {
  TrainConfig copy = config;
  std::map<std::string, toml::table> sections;
  for (const auto& [key, field] : fields(copy)) {
    const auto dot = key.find('.');
    auto& section = sections[key.substr(0, dot)];
    const std::string name = key.substr(dot + 1);
    std::visit(
        [&](auto* v) {
          using T = std::remove_pointer_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, double>) {
            section.insert(name, *v);
          } else {
            section.insert(name, static_cast<int64_t>(*v));
          }
        },
        field);
  }
  sections["model"].insert("preset", copy.preset);
  toml::table root;
  for (auto& [name, table] : sections) root.insert(name, table);
  std::ostringstream out;
  out << root << "\n";
  return out.str();
}

}  // namespace reach::train
