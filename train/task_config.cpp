#include "train/task_config.hpp"

#include <algorithm>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "data/tasks/needle_task.hpp"
#include "data/tasks/variable_tracking_task.hpp"
#include "train/config_fields.hpp"

namespace reach::train {
namespace {

void check_device(const std::string& key, const std::string& device) {
  const bool cuda_index = device.starts_with("cuda:") && device.size() > 5 &&
                          device.find_first_not_of("0123456789", 5) == std::string::npos;
  if (device != "auto" && device != "cpu" && device != "cuda" && !cuda_index) {
    throw std::invalid_argument(key + " must be auto, cpu, cuda or cuda:N, got '" + device + "'");
  }
}

ConfigKeys keys(TaskRunConfig& c) {
  ConfigKeys k;
  add_run_keys(k, c.out_dir, c.seed, c.threads);
  k.add("task.name", &c.task, "the task",
        one_of({"max_retrieval", "associative_recall", "mqar", "passkey", "needle",
                "variable_tracking"}))
      .add("task.num_values", &c.num_values, "max_retrieval: values")
      .add("task.items", &c.items, "max_retrieval: numbers shown")
      .add("task.filler_tokens", &c.filler_tokens, "max_retrieval: distinct filler tokens")
      .add("task.alphabet", &c.alphabet, "associative_recall: symbols spelling keys and values")
      .add("task.vocabulary", &c.vocabulary,
           "associative_recall: distinct keys (and distinct values) examples draw from")
      .add("task.queries", &c.queries, "associative_recall, needle: keys asked")
      .add("task.tokens_per_item", &c.tokens_per_item, "associative_recall: tokens per key / value")
      .add("task.kv_fraction", &c.kv_fraction,
           "associative_recall: share of the context taken by the bindings", above_up_to(0, 1))
      .add("task.digits", &c.digits, "passkey, needle, variable_tracking: digits of the value")
      .add("task.depth", &c.depth, "passkey: where the key sits, in [0, 1] (< 0 random)")
      .add("task.needles", &c.needles, "needle: needles in the haystack")
      .add("task.chains", &c.chains, "variable_tracking: chains of assignments (one query each)")
      .add("task.hops", &c.hops, "variable_tracking: assignments after the first, per chain")
      .add("task.corpus", &c.corpus,
           "needle, variable_tracking: filler text: kjv (the Debian KJV Bible), or a text file "
           "or folder");
  add_model_keys(k, c.model);
  k.add("train.length", &c.train_length,
        "training length (associative_recall: of the context; queries and answers come on top)",
        at_least(1))
      .add("train.min_length", &c.train_min_length,
           "> 0: each step's length is drawn uniformly from [train.min_length, train.length]",
           at_least(0))
      .add("train.batch", &c.batch, "sequences per step", at_least(1))
      .add("train.steps", &c.steps, "optimizer steps", at_least(1))
      .add("train.init_from", &c.init_from,
           "start from these weights: a finished task run, a checkpoint (checkpoints/step-N) "
           "or a model.safetensors file (a curriculum's next stage; the optimizer starts fresh; "
           "the model config must match)");
  add_optimizer_keys(k, c);
  k.add("train.log_every", &c.log_every, "steps between log lines", at_least(1))
      .add("train.checkpoint_every", &c.checkpoint_every, "steps between checkpoints", at_least(1))
      .add("train.keep_checkpoints", &c.keep_checkpoints,
           "checkpoints kept: the newest N, plus any whose directory holds a file named keep",
           at_least(1))
      .add("train.device", &c.device, "where to train (as in `reach train`)",
           checked_by("auto, cpu, cuda or cuda:N", check_device))
      .add("train.precision", &c.precision, "auto = bf16 autocast on CUDA, fp32 on the CPU",
           one_of({"auto", "fp32", "bf16"}))
      .add("train.profile_steps", &c.profile_steps, "> 0: time this many steps phase by phase",
           at_least(0))
      .add("train.loss_chunk_rows", &c.loss_chunk_rows,
           "rows of logits per chunk of the training loss (0 = full logits; -1 = auto: "
           "2^26 / vocab rows on CUDA when the vocabulary is >= 4096, else full logits)",
           at_least(-1))
      .add("eval.multipliers", &c.multipliers,
           "evaluation lengths as multiples of train.length, comma-separated")
      .add("eval.examples", &c.examples, "examples per length", at_least(1))
      .add("eval.batch", &c.eval_batch, "examples per evaluation batch", at_least(1))
      .add("eval.max_length", &c.max_length, "longer lengths are skipped (>= train.length)",
           at_least(1));
  return k;
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
  check_optimizer(c);
  const auto task = make_task(c);  // validates the task parameters
  if (c.train_length < task->min_length()) {
    throw std::invalid_argument("config key 'train.length' (" + std::to_string(c.train_length) +
                                ") is below the task's minimum length " +
                                std::to_string(task->min_length()));
  }
  if (c.train_min_length > 0 &&
      (c.train_min_length > c.train_length || c.train_min_length < task->min_length())) {
    throw std::invalid_argument(
        "config key 'train.min_length' (" + std::to_string(c.train_min_length) +
        ") must be 0 or between the task's minimum length " + std::to_string(task->min_length()) +
        " and train.length (" + std::to_string(c.train_length) + ")");
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
    return make_associative_recall({narrow(c.alphabet, "task.alphabet"),
                                    narrow(c.vocabulary, "task.vocabulary"),
                                    narrow(c.tokens_per_item, "task.tokens_per_item"),
                                    narrow(c.queries, "task.queries"), c.kv_fraction});
  }
  if (c.task == "passkey") return make_passkey({narrow(c.digits, "task.digits"), c.depth});
  if (c.task == "needle") {
    return make_needle({narrow(c.needles, "task.needles"), narrow(c.queries, "task.queries"),
                        narrow(c.digits, "task.digits"), c.corpus});
  }
  if (c.task == "variable_tracking") {
    return make_variable_tracking({narrow(c.chains, "task.chains"), narrow(c.hops, "task.hops"),
                                   narrow(c.digits, "task.digits"), c.corpus});
  }
  throw std::invalid_argument(
      "config key 'task.name' must be max_retrieval, associative_recall "
      "(mqar), passkey, needle or variable_tracking, got '" +
      c.task + "'");
}

TaskRunConfig parse_task_config(const std::string& toml_text,
                                const std::vector<std::string>& overrides) {
  TaskRunConfig config;
  apply_config(toml_text, overrides, [&](const std::optional<std::string>& preset) {
    if (preset) config.preset = *preset;
    config.model = model::preset(config.preset);
    config.model.vocab_size = 0;
    return keys(config);
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
  return keys_to_toml(keys(copy), copy.preset);
}

std::string task_config_help() {
  TaskRunConfig defaults;
  defaults.model.vocab_size = 0;
  return keys_help(keys(defaults), defaults.preset);
}

}  // namespace reach::train
