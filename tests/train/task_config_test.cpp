// The synthetic-task run config: defaults, overrides, the task's vocabulary, round trip
// through TOML, and one-line errors that name the bad key.
#include "train/task_config.hpp"

#include <gtest/gtest.h>

#include <sstream>

namespace reach::train {
namespace {

void expect_error(const std::string& toml, const std::vector<std::string>& overrides,
                  const std::string& fragment) {
  try {
    parse_task_config(toml, overrides);
    FAIL() << "expected an error containing '" << fragment << "'";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(TaskConfig, DefaultsTakeTheTaskVocabularyAndResolveReach) {
  const auto c = parse_task_config("", {"task.num_values=10", "train.length=32"});
  EXPECT_EQ(c.task, "max_retrieval");
  EXPECT_EQ(c.model.vocab_size, 12);  // filler, query marker, 10 numbers
  EXPECT_EQ(c.model.reach, 32);
  const auto mqar = parse_task_config("[task]\nname = \"mqar\"\n", {});
  EXPECT_EQ(mqar.model.vocab_size, 3 + 256 + 3);  // space, separators, alphabet, bos/sep/eos
}

TEST(TaskConfig, RoundTripsThroughToml) {
  const auto c = parse_task_config(
      "[model]\npreset = \"tiny\"\nnormalizer = \"asentmax\"\npositions = \"nape\"\n"
      "attention = \"dense\"\n[train]\nsteps = 7\n",
      {"eval.multipliers=1,2", "task.items=4"});
  const auto back = parse_task_config(to_toml(c), {});
  EXPECT_EQ(to_toml(back), to_toml(c));
  EXPECT_EQ(back.model.normalizer, model::Normalizer::asentmax);
  EXPECT_EQ(back.model.positions, model::Positions::nape);
  EXPECT_EQ(back.model.d_model, 128);  // the tiny preset
  EXPECT_EQ(back.steps, 7);
  EXPECT_EQ(back.items, 4);
  EXPECT_EQ(parse_task_config("", {"train.profile_steps=3"}).profile_steps, 3);
  EXPECT_EQ(parse_multipliers(back.multipliers), (std::vector<int64_t>{1, 2}));
}

// The optimiser keys are the same declarations as `reach train`'s (one shared sub-config),
// with the task's own default weight decay.
TEST(TaskConfig, SharesTheOptimizerKeysWithTrain) {
  const auto c = parse_task_config("", {"train.lr=0.02", "train.min_lr=0.001", "train.warmup=7",
                                        "train.grad_clip=0.5", "train.weight_decay=0.05"});
  const OptimizerConfig& o = c;
  EXPECT_DOUBLE_EQ(o.lr, 0.02);
  EXPECT_DOUBLE_EQ(o.min_lr, 0.001);
  EXPECT_EQ(o.warmup, 7);
  EXPECT_DOUBLE_EQ(o.grad_clip, 0.5);
  EXPECT_DOUBLE_EQ(o.weight_decay, 0.05);
  EXPECT_DOUBLE_EQ(parse_task_config("", {}).weight_decay, 0.0);
  const std::string help = task_config_help();
  EXPECT_NE(help.find("weight_decay = 0 "), std::string::npos) << help;
  EXPECT_NE(
      help.find("(max_retrieval, associative_recall, mqar, passkey, needle or variable_tracking)"),
      std::string::npos);
  expect_error("", {"train.warmup=-2"}, "train.warmup must be >= 0, got -2");
}

// The associative-recall table's five variants are one recipe: their configs, written out in
// full, differ only in the model's normalizer, positions and entmax_scale.
TEST(TaskConfig, AssociativeRecallVariantsShareOneRecipe) {
  auto recipe = [](const TaskRunConfig& c) {
    std::istringstream in(to_toml(c));
    std::string line, out;
    while (std::getline(in, line)) {
      if (line.starts_with("normalizer =") || line.starts_with("positions =") ||
          line.starts_with("entmax_scale =")) {
        continue;
      }
      out += line + "\n";
    }
    return out;
  };
  std::string first;
  for (const char* variant :
       {"softmax-rope", "softmax-nape", "ssmax-nape", "entmax-nape", "asentmax-nape"}) {
    const auto c = load_task_config(
        std::string(REACH_SOURCE_DIR) + "/configs/tasks/associative-recall-" + variant + ".toml",
        {});
    const std::string v = variant;
    EXPECT_EQ(model::to_string(c.model.normalizer), v.substr(0, v.find('-'))) << v;
    EXPECT_EQ(model::to_string(c.model.positions), v.substr(v.find('-') + 1)) << v;
    EXPECT_EQ(c.model.entmax_scale == model::EntmaxScale::per_query, v == "asentmax-nape") << v;
    EXPECT_EQ(c.task, "associative_recall");
    EXPECT_EQ(c.model.vocab_size, 262);
    EXPECT_EQ(c.train_length, 64);
    EXPECT_EQ(c.train_min_length, 32);
    EXPECT_EQ(c.model.heads, 16);
    if (first.empty()) first = recipe(c);
    EXPECT_EQ(recipe(c), first) << v;
  }
}

TEST(TaskConfig, BadValuesNameTheKey) {
  expect_error("", {"task.name=sorting"}, "task.name");
  expect_error("", {"train.speed=3"}, "unknown config key 'train.speed'");
  expect_error("", {"eval.multipliers=1,x"}, "eval.multipliers");
  expect_error("", {"eval.multipliers=0"}, "eval.multipliers");
  expect_error("", {"model.vocab_size=99"}, "model.vocab_size");
  expect_error("", {"train.length=5"}, "train.length");
  expect_error("", {"train.batch=0"}, "train.batch");
  expect_error("", {"train.profile_steps=-1"}, "train.profile_steps must be >= 0, got -1");
  expect_error("", {"eval.max_length=8"}, "eval.max_length");
  expect_error("", {"task.items=0"}, "items");
  expect_error("", {"train.min_length=65"}, "'train.min_length' (65) must be 0 or between");
  expect_error("", {"task.name=mqar", "train.min_length=20"}, "task's minimum length 30");
  expect_error("", {"task.name=mqar", "task.kv_fraction=1.2"}, "task.kv_fraction");
  expect_error("", {"task.name=mqar", "task.vocabulary=70000"}, "vocabulary (70000) exceeds");
  expect_error("", {"model.normalizer=sparsemax"}, "model.normalizer");
  expect_error("", {"model.entmax_alpha=2.5"}, "model.entmax_alpha");
  expect_error("", {"model.positions=nape", "model.heads=1", "model.d_model=16"}, "nape");
  expect_error("", {"train.steps=\"many\""}, "must be an integer");
  expect_error("[task\n", {}, "not valid TOML");
}

}  // namespace
}  // namespace reach::train
