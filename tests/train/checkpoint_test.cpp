#include "train/checkpoint.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace reach::train {
namespace {

namespace fs = std::filesystem;

TEST(Checkpoint, RoundTripsWeightsAndOptimizerState) {
  const fs::path dir = fs::temp_directory_path() / "reach_ckpt_test";
  fs::remove_all(dir);
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
  fs::remove_all(dir);
}

}  // namespace
}  // namespace reach::train
