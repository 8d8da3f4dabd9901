#include "train/checkpoint.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "io/remove_tree.hpp"

namespace reach::train {
namespace {

namespace fs = std::filesystem;

TEST(Checkpoint, RoundTripsWeightsAndOptimizerState) {
  const fs::path dir = fs::temp_directory_path() / "reach_ckpt_test";
  reach::io::remove_tree(dir);
  auto config = parse_train_config(
      "[model]\npreset = \"micro\"\n",
      {"run.out_dir=" + dir.string(), "model.schedule=learned", "model.vocab_size=256"});
  torch::manual_seed(3);
  model::Gpt net(config.model);
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
  auto x = torch::randint(0, 256, {2, 16}, torch::kInt64);
  net(x).sum().backward();
  opt.step();
  save_checkpoint(config.out_dir, 5, net, opt, config, *data::make_byte_tokenizer());
  const auto latest = latest_checkpoint(config.out_dir);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(fs::path(*latest).filename(), "step-00000005");
  EXPECT_FALSE(fs::exists(dir / "checkpoints" / ".tmp-step-00000005"));

  auto loaded = load_checkpoint(*latest);
  EXPECT_EQ(loaded.step, 5);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(loaded.model(x), net(x)));
  torch::optim::AdamW opt2(loaded.model->parameters(), torch::optim::AdamWOptions(1e-2));
  load_optimizer_state(*latest, loaded.model, opt2);
  EXPECT_EQ(opt2.state().size(), opt.state().size());

  // Corruptions are clear errors naming the problem.
  std::ofstream(fs::path(*latest) / "model.safetensors", std::ios::trunc) << "garbage";
  EXPECT_THROW(
      {
        try {
          load_checkpoint(*latest);
        } catch (const std::runtime_error& e) {
          EXPECT_NE(std::string(e.what()).find("model.safetensors"), std::string::npos);
          throw;
        }
      },
      std::runtime_error);
  fs::remove(fs::path(*latest) / "state.json");
  EXPECT_THROW(load_checkpoint(*latest), std::runtime_error);
  reach::io::remove_tree(dir);
}

// Writes checkpoints of one micro model at the given steps under dir.
void write_checkpoints(const fs::path& dir, const std::vector<int64_t>& steps) {
  auto config = parse_train_config("[model]\npreset = \"micro\"\n",
                                   {"run.out_dir=" + dir.string(), "model.vocab_size=256"});
  torch::manual_seed(3);
  model::Gpt net(config.model);
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
  net(torch::randint(0, 256, {2, 16}, torch::kInt64)).sum().backward();
  opt.step();
  for (int64_t step : steps) {
    save_checkpoint(config.out_dir, step, net, opt, config, *data::make_byte_tokenizer());
  }
}

TEST(Checkpoint, NewestValidFallsBackPastCorruptAndStrayDirectories) {
  const fs::path dir = fs::temp_directory_path() / "reach_ckpt_fallback_test";
  reach::io::remove_tree(dir);
  write_checkpoints(dir, {10, 20});
  const fs::path root = dir / "checkpoints";
  // The newest written one corrupt, and an empty stray directory above it.
  std::ofstream(root / "step-00000020" / "optimizer.safetensors", std::ios::trunc) << "garbage";
  fs::create_directories(root / "step-00000030");
  const auto choice = newest_valid_checkpoint(dir.string());
  EXPECT_EQ(fs::path(choice.dir).filename(), "step-00000010");
  EXPECT_EQ(choice.checkpoint.step, 10);
  ASSERT_EQ(choice.skipped.size(), 2u);
  EXPECT_NE(choice.skipped[0].find("step-00000030"), std::string::npos) << choice.skipped[0];
  EXPECT_NE(choice.skipped[0].find("state.json"), std::string::npos) << choice.skipped[0];
  EXPECT_NE(choice.skipped[1].find("step-00000020"), std::string::npos) << choice.skipped[1];
  // A run directory resolves to it; a checkpoint directory resolves to itself.
  EXPECT_EQ(choose_checkpoint(dir.string()).dir, choice.dir);
  EXPECT_EQ(choose_checkpoint((root / "step-00000010").string()).checkpoint.step, 10);
  // Nothing valid: an error naming the run and each reason.
  reach::io::remove_tree(root / "step-00000010");
  try {
    choose_checkpoint(dir.string());
    FAIL() << "no valid checkpoint, yet one was chosen";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no checkpoint that loads"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("step-00000020"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(newest_valid_checkpoint((dir / "nothing").string()).dir.empty());
  reach::io::remove_tree(dir);
}

TEST(Checkpoint, PartialWritesAreRemoved) {
  const fs::path dir = fs::temp_directory_path() / "reach_ckpt_partial_test";
  reach::io::remove_tree(dir);
  write_checkpoints(dir, {5});
  const fs::path partial = dir / "checkpoints" / ".tmp-step-00000010";
  fs::create_directories(partial);
  std::ofstream(partial / "model.safetensors") << "half";
  const auto removed = remove_partial_checkpoints(dir.string());
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_FALSE(fs::exists(partial));
  EXPECT_TRUE(fs::exists(dir / "checkpoints" / "step-00000005"));
  reach::io::remove_tree(dir);
}

TEST(Checkpoint, RetentionKeepsTheNewestAndTheMarked) {
  const fs::path dir = fs::temp_directory_path() / "reach_ckpt_retention_test";
  reach::io::remove_tree(dir);
  write_checkpoints(dir, {1, 2, 3, 4, 5});
  const fs::path root = dir / "checkpoints";
  std::ofstream(root / "step-00000002" / "keep");
  const auto removed = remove_old_checkpoints(dir.string(), 2);
  EXPECT_EQ(removed.size(), 2u);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(root)) left.push_back(e.path().filename());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"step-00000002", "step-00000004", "step-00000005"}));
  reach::io::remove_tree(dir);
}

TEST(Checkpoint, StepsPastEightDigitsSortByNumber) {
  const fs::path dir = fs::temp_directory_path() / "reach_ckpt_digits_test";
  reach::io::remove_tree(dir);
  fs::create_directories(dir / "checkpoints" / "step-99999999");
  fs::create_directories(dir / "checkpoints" / "step-100000000");
  fs::create_directories(dir / "checkpoints" / "step-x");
  EXPECT_EQ(fs::path(*latest_checkpoint(dir.string())).filename(), "step-100000000");
  reach::io::remove_tree(dir);
}

}  // namespace
}  // namespace reach::train
