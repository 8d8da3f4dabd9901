// The synthetic-task run config: defaults, overrides, the task's vocabulary, round trip
// through TOML, and one-line errors that name the bad key.
#include "train/task_config.hpp"

#include <gtest/gtest.h>

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
  EXPECT_EQ(mqar.model.vocab_size, 2 + 64 + 64);
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
  EXPECT_NE(help.find("(max_retrieval, associative_recall, mqar or passkey)"), std::string::npos);
  expect_error("", {"train.warmup=-2"}, "train.warmup must be >= 0, got -2");
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
  expect_error("", {"model.normalizer=sparsemax"}, "model.normalizer");
  expect_error("", {"model.entmax_alpha=2.5"}, "model.entmax_alpha");
  expect_error("", {"model.positions=nape", "model.heads=1", "model.d_model=16"}, "nape");
  expect_error("", {"train.steps=\"many\""}, "must be an integer");
  expect_error("[task\n", {}, "not valid TOML");
}

}  // namespace
}  // namespace reach::train
