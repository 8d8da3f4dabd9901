#include "train/task_config.hpp"

#include <algorithm>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "train/config_fields.hpp"

namespace reach::train {
namespace {

ConfigFields fields(TaskRunConfig& c) {
  ConfigFields f = {
      {"run.out_dir", &c.out_dir},
      {"run.seed", &c.seed},
      {"run.threads", &c.threads},
      {"task.name", &c.task},
      {"task.num_values", &c.num_values},
      {"task.items", &c.items},
      {"task.filler_tokens", &c.filler_tokens},
      {"task.num_keys", &c.num_keys},
      {"task.pairs", &c.pairs},
      {"task.queries", &c.queries},
      {"task.tokens_per_item", &c.tokens_per_item},
      {"task.digits", &c.digits},
      {"task.depth", &c.depth},
      {"train.length", &c.train_length},
      {"train.batch", &c.batch},
      {"train.steps", &c.steps},
      {"train.lr", &c.lr},
      {"train.min_lr", &c.min_lr},
      {"train.warmup", &c.warmup},
      {"train.weight_decay", &c.weight_decay},
      {"train.grad_clip", &c.grad_clip},
      {"train.log_every", &c.log_every},
      {"eval.multipliers", &c.multipliers},
      {"eval.examples", &c.examples},
      {"eval.batch", &c.eval_batch},
      {"eval.max_length", &c.max_length},
  };
  add_model_fields(f, c.model);
  return f;
}

int32_t narrow(int64_t value, const char* key) {
  if (value > std::numeric_limits<int32_t>::max() || value < std::numeric_limits<int32_t>::min()) {
    throw std::invalid_argument(std::string("config key '") + key + "' is out of range");
  }
  return static_cast<int32_t>(value);
}

void validate(const TaskRunConfig& c) {
  auto at_least = [](int64_t v, int64_t min, const char* key) {
    if (v < min) {
      throw std::invalid_argument(std::string("config key '") + key + "' must be >= " +
                                  std::to_string(min) + ", got " + std::to_string(v));
    }
  };
  at_least(c.batch, 1, "train.batch");
  at_least(c.steps, 1, "train.steps");
  at_least(c.warmup, 0, "train.warmup");
  at_least(c.log_every, 1, "train.log_every");
  at_least(c.examples, 1, "eval.examples");
  at_least(c.eval_batch, 1, "eval.batch");
  at_least(c.threads, 0, "run.threads");
  if (!(c.lr > 0)) throw std::invalid_argument("config key 'train.lr' must be > 0");
  if (c.min_lr < 0 || c.min_lr > c.lr) {
    throw std::invalid_argument("config key 'train.min_lr' must be in [0, train.lr]");
  }
  if (c.weight_decay < 0)
    throw std::invalid_argument("config key 'train.weight_decay' must be >= 0");
  if (!(c.grad_clip > 0)) throw std::invalid_argument("config key 'train.grad_clip' must be > 0");
  const auto task = make_task(c);  // validates the task parameters
  if (c.train_length < task->min_length()) {
    throw std::invalid_argument("config key 'train.length' (" + std::to_string(c.train_length) +
                                ") is below the task's minimum length " +
                                std::to_string(task->min_length()));
  }
  at_least(c.max_length, c.train_length, "eval.max_length");
  parse_multipliers(c.multipliers);
  model::validate(c.model);
}

}  // namespace

std::vector<int64_t> parse_multipliers(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t used = 0;
    int64_t value = 0;
    try {
      value = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || item.empty() || value < 1) {
      throw std::invalid_argument(
          "config key 'eval.multipliers' must be positive integers "
          "separated by commas (e.g. 1,4,16,64), got '" +
          text + "'");
    }
    out.push_back(value);
  }
  if (out.empty()) throw std::invalid_argument("config key 'eval.multipliers' is empty");
  return out;
}

std::unique_ptr<data::tasks::SyntheticTask> make_task(const TaskRunConfig& c) {
  using namespace data::tasks;
  if (c.task == "max_retrieval") {
    return make_max_retrieval({narrow(c.num_values, "task.num_values"),
                               narrow(c.items, "task.items"),
                               narrow(c.filler_tokens, "task.filler_tokens")});
  }
  if (c.task == "associative_recall" || c.task == "mqar") {
    return make_associative_recall(
        {narrow(c.num_keys, "task.num_keys"), narrow(c.num_values, "task.num_values"),
         narrow(c.pairs, "task.pairs"), narrow(c.queries, "task.queries"),
         narrow(c.tokens_per_item, "task.tokens_per_item")});
  }
  if (c.task == "passkey") return make_passkey({narrow(c.digits, "task.digits"), c.depth});
  throw std::invalid_argument(
      "config key 'task.name' must be max_retrieval, associative_recall "
      "(mqar) or passkey, got '" +
      c.task + "'");
}

TaskRunConfig parse_task_config(const std::string& toml_text,
                                const std::vector<std::string>& overrides) {
  TaskRunConfig config;
  apply_config(toml_text, overrides, [&](const std::optional<std::string>& preset) {
    if (preset) config.preset = *preset;
    config.model = model::preset(config.preset);
    config.model.vocab_size = 0;
    return fields(config);
  });
  // The vocabulary is the task's; a config may state it (saved runs do) but not change it.
  const int64_t vocab = make_task(config)->vocab_size();
  if (config.model.vocab_size != 0 && config.model.vocab_size != vocab) {
    throw std::invalid_argument("config key 'model.vocab_size' (" +
                                std::to_string(config.model.vocab_size) + ") differs from the " +
                                config.task + " task's vocabulary (" + std::to_string(vocab) +
                                "); leave it out");
  }
  config.model.vocab_size = vocab;
  if (config.model.reach == 0) {
    config.model.reach = std::max(config.train_length, config.model.window);
  }
  validate(config);
  return config;
}

TaskRunConfig load_task_config(const std::string& path, const std::vector<std::string>& overrides) {
  return parse_task_config(read_config_file(path), overrides);
}

std::string to_toml(const TaskRunConfig& config) {
  TaskRunConfig copy = config;
  return fields_to_toml(fields(copy), copy.preset);
}

}  // namespace reach::train
