#include "train/train_config.hpp"

#include <gtest/gtest.h>

#include <sstream>

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

// train.eval_tokens follows data.seq_len unless set: a 64k-token run needs no other key.
TEST(TrainConfig, EvalTokensFollowSeqLen) {
  EXPECT_EQ(parse_train_config("", {"data.seq_len=64"}).eval_tokens, 16384);
  EXPECT_EQ(parse_train_config("", {"data.seq_len=65536"}).eval_tokens, 65536);
  EXPECT_EQ(parse_train_config("", {"data.seq_len=64", "train.eval_tokens=640"}).eval_tokens, 640);
  expect_error("", {"data.seq_len=256", "train.eval_tokens=100"},
               "train.eval_tokens (100) must be >= data.seq_len (256): set train.eval_tokens");
  // The saved config reads back to the same value.
  const auto c = parse_train_config("", {"data.seq_len=65536"});
  EXPECT_EQ(parse_train_config(to_toml(c), {}).eval_tokens, 65536);
}

// One declaration per key drives parsing, the saved TOML and --help: every saved key is in the
// help with its default, and enum keys list their names there and in errors.
TEST(TrainConfig, HelpListsEveryKeyWithItsValidValues) {
  const std::string help = train_config_help();
  std::istringstream saved(to_toml(parse_train_config("", {})));
  std::string line;
  int keys = 0;
  while (std::getline(saved, line)) {
    const auto eq = line.find(" = ");
    if (eq == std::string::npos) continue;
    ++keys;
    EXPECT_NE(help.find("  " + line.substr(0, eq) + " = "), std::string::npos) << line;
  }
  EXPECT_GT(keys, 30);
  EXPECT_NE(help.find("attention = \"fibonacci\""), std::string::npos) << help;
  EXPECT_NE(help.find("(dense, window, fibonacci, power_of_two or chunk)"), std::string::npos);
  EXPECT_NE(help.find("(softmax, entmax, asentmax or ssmax)"), std::string::npos);
  EXPECT_NE(help.find("(auto, fp32 or bf16)"), std::string::npos);
  EXPECT_NE(help.find("lr = 0.003"), std::string::npos);
  expect_error(
      "", {"model.attention=ring"},
      "model.attention must be dense, window, fibonacci, power_of_two or chunk, got 'ring'");
  expect_error("", {"model.schedule=spiral"},
               "model.schedule must be fixed, stagger, coprime or learned, got 'spiral'");
}

TEST(TrainConfig, ValuesOutOfRangeNameTheKeyAndTheRange) {
  expect_error("", {"train.warmup=-1"}, "train.warmup must be >= 0, got -1");
  expect_error("", {"data.seq_len=1"}, "data.seq_len must be >= 2, got 1");
  expect_error("", {"model.rope_base=0"}, "model.rope_base must be > 0, got 0");
  expect_error("", {"model.bias=maybe"}, "model.bias must be true or false, got 'maybe'");
  expect_error("", {"model.convention=authors"}, "model.convention must be");
  expect_error("", {"model.kv_heads=3"}, "model.kv_heads (3) must divide model.heads");
  expect_error("", {"model.entmax_alpha=2.5"}, "model.entmax_alpha must be in (1, 2], got 2.5");
  expect_error("", {"train.min_lr=0.01", "train.lr=0.001"}, "train.min_lr (0.01) must be <=");
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
