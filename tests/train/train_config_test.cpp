#include "train/train_config.hpp"

#include <gtest/gtest.h>

namespace reach::train {
namespace {

void expect_error(const std::string& toml, const std::vector<std::string>& sets,
                  const std::string& needle) {
  try {
    parse_train_config(toml, sets);
    ADD_FAILURE() << "expected an error mentioning " << needle;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(TrainConfig, ParsesTomlAndOverrides) {
  const auto c = parse_train_config(
      "[model]\npreset = \"micro\"\nattention = \"power_of_two\"\n[train]\nlr = 0.01\n",
      {"data.seq_len=64", "model.schedule=coprime", "train.steps=7"});
  EXPECT_EQ(c.model.layers, 2);
  EXPECT_EQ(c.model.attention, model::AttentionFamily::power_of_two);
  EXPECT_EQ(c.model.schedule, model::AlphaSchedule::coprime);
  EXPECT_DOUBLE_EQ(c.lr, 0.01);
  EXPECT_EQ(c.seq_len, 64);
  EXPECT_EQ(c.steps, 7);
  EXPECT_EQ(c.model.reach, 64);  // resolved from seq_len
}

TEST(TrainConfig, RoundTripsThroughToml) {
  const auto c = parse_train_config("", {"model.attention=dense", "train.lr=0.0123", "run.seed=9"});
  const auto d = parse_train_config(to_toml(c), {});
  EXPECT_EQ(to_toml(c), to_toml(d));
  EXPECT_DOUBLE_EQ(d.lr, 0.0123);
  EXPECT_EQ(d.seed, 9u);
}

TEST(TrainConfig, BadInputNamesTheKey) {
  expect_error("[train]\nsteps = \"many\"\n", {}, "'train.steps' must be an integer");
  expect_error("[train]\nlearning_rate = 1\n", {}, "unknown config key 'train.learning_rate'");
  expect_error("", {"model.heads=3"}, "divisible");
  expect_error("", {"model.attention=ring"}, "model.attention");
  expect_error("", {"model.positions=sideways"},
               "model.positions must be rope, alibi, nope or nape");
  expect_error("", {"nodot=1"}, "section.key");
  expect_error("", {"train.lr"}, "key=value");
  expect_error("[train\n", {}, "not valid TOML");
  expect_error("", {"train.lr=-1"}, "train.lr");
  expect_error("", {"model.preset=huge"}, "unknown model preset");
}

}  // namespace
}  // namespace reach::train

namespace reach::train {
namespace {

TEST(TrainConfig, ShippedConfigsParse) {
  for (const char* name : {"tiny-fibonacci.toml", "paper-stagger.toml"}) {
    const auto c = load_train_config(std::string(REACH_SOURCE_DIR) + "/configs/" + name, {});
    EXPECT_EQ(c.model.attention, model::AttentionFamily::fibonacci) << name;
  }
  const auto paper =
      load_train_config(std::string(REACH_SOURCE_DIR) + "/configs/paper-stagger.toml", {});
  EXPECT_EQ(paper.model.layers, 16);
  EXPECT_EQ(paper.model.d_model, 512);
}

}  // namespace
}  // namespace reach::train
