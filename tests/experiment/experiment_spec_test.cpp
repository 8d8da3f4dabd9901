#include "experiment/experiment_spec.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "io/remove_tree.hpp"
#include "model/gpt.hpp"
#include "train/train_config.hpp"

namespace reach::experiment {
namespace {

const char* kMatrix = R"(
[experiment]
name = "m"
out_dir = "runs/m"
set = ["train.steps=10"]
seeds = [3]
multipliers = [1, 2, 4]
max_tokens = 4096
reference = "paper"

[[run]]
name = "dense"
set = ["model.attention=dense"]
reference = [33.37, 49.15, 100.36]

[[run]]
name = "stagger"
seeds = [42, 43]
)";

void expect_error(const std::string& text, const std::string& fragment) {
  try {
    parse_experiment(text, ".");
    FAIL() << "expected an error containing '" << fragment << "'";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(ExperimentSpec, ParsesRunsSharedOverridesSeedsAndReferences) {
  const auto spec = parse_experiment(kMatrix, ".", {"train.lr=0.01"});
  EXPECT_EQ(spec.name, "m");
  EXPECT_EQ(spec.multipliers, (std::vector<int64_t>{1, 2, 4}));
  EXPECT_EQ(spec.max_tokens, 4096);
  EXPECT_EQ(spec.reference_name, "paper");
  ASSERT_EQ(spec.runs.size(), 2u);
  EXPECT_EQ(spec.runs[0].overrides,
            (std::vector<std::string>{"train.steps=10", "model.attention=dense", "train.lr=0.01"}));
  EXPECT_EQ(spec.runs[0].seeds, (std::vector<uint64_t>{3}));
  EXPECT_EQ(spec.runs[0].reference, (std::vector<double>{33.37, 49.15, 100.36}));
  EXPECT_EQ(spec.runs[1].seeds, (std::vector<uint64_t>{42, 43}));
  EXPECT_TRUE(spec.runs[1].reference.empty());
  EXPECT_EQ(run_directory(spec, spec.runs[1], 43), "runs/m/stagger-seed43");
}

TEST(ExperimentSpec, SelectRunsKeepsTheNamedRunsInOrderAndReplacesTheirSeeds) {
  const auto spec = parse_experiment(kMatrix, ".");
  const auto only_stagger = select_runs(spec, {"stagger"}, {});
  ASSERT_EQ(only_stagger.runs.size(), 1u);
  EXPECT_EQ(only_stagger.runs[0].name, "stagger");
  EXPECT_EQ(only_stagger.runs[0].seeds, (std::vector<uint64_t>{42, 43}));
  EXPECT_EQ(only_stagger.out_dir, spec.out_dir);  // the same run directories as the whole
  const auto both_one_seed = select_runs(spec, {"stagger", "dense"}, {7});
  ASSERT_EQ(both_one_seed.runs.size(), 2u);
  EXPECT_EQ(both_one_seed.runs[0].name, "dense");  // the matrix's order, not the list's
  EXPECT_EQ(both_one_seed.runs[0].seeds, (std::vector<uint64_t>{7}));
  EXPECT_EQ(both_one_seed.runs[1].seeds, (std::vector<uint64_t>{7}));
  EXPECT_EQ(select_runs(spec, {}, {}).runs.size(), 2u);
  const auto error_of = [&](const std::vector<std::string>& names,
                            const std::vector<uint64_t>& seeds) -> std::string {
    try {
      select_runs(spec, names, seeds);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(
      error_of({"coprime"}, {}).find("no run named 'coprime' in 'm' (its runs: dense, stagger)"),
      std::string::npos);
  EXPECT_NE(error_of({"dense", "dense"}, {}).find("'dense' named twice"), std::string::npos);
  EXPECT_NE(error_of({}, {3, 3}).find("seed is named twice"), std::string::npos);
}

TEST(ExperimentSpec, BadMatricesNameTheProblem) {
  expect_error("[experiment]\nname = \"x\"\n", "no runs");
  expect_error("[[run]]\nname = \"a\"\nstep = 3\n", "unknown key 'step'");
  expect_error("[experiment]\nseed = [1]\n[[run]]\nname = \"a\"\n", "unknown key 'seed'");
  expect_error("[[run]]\nname = \"a b\"\n", "'name' must be");
  expect_error("[[run]]\nname = \"a\"\n[[run]]\nname = \"a\"\n", "run 'a' twice");
  expect_error("[[run]]\nname = \"a\"\nseeds = [1, 1]\n", "seed twice");
  expect_error("[[run]]\nname = \"a\"\nreference = [1.0]\n", "one number per multiplier (3)");
  expect_error("[[run]]\nname = \"a\"\nconfig = \"/nonexistent.toml\"\n", "is not a file");
  expect_error("[experiment]\nmultipliers = [0]\n[[run]]\nname = \"a\"\n", "integers >= 1");
  expect_error("[experiment]\nmax_tokens = 0\n[[run]]\nname = \"a\"\n", "'max_tokens'");
  expect_error("[experiment\n", "TOML");
  EXPECT_THROW(load_experiment("/nonexistent/matrix.toml"), std::invalid_argument);
}

TEST(ExperimentSpec, ConfigPathsAreRelativeToTheMatrix) {
  const auto dir = std::filesystem::temp_directory_path() / "reach_experiment_spec_test";
  std::filesystem::create_directories(dir / "configs");
  std::ofstream(dir / "configs" / "base.toml") << "[train]\nsteps = 5\n";
  std::ofstream(dir / "matrix.toml")
      << "[experiment]\nconfig = \"configs/base.toml\"\n[[run]]\nname = \"a\"\n";
  const auto spec = load_experiment((dir / "matrix.toml").string());
  EXPECT_EQ(spec.runs[0].config_path, (dir / "configs" / "base.toml").string());
  reach::io::remove_tree(dir);
}

// The shipped paper matrix: 22 runs (the authors' f01..f21 and dense), every run's config
// parses, and each model builds with the paper's parameter count (60,850,688 with its
// 32,768-token vocabulary; the learned rows' reach convention has the same weights plus one
// theta per layer).
TEST(ExperimentSpec, ThePaperMatrixParsesAndBuildsThePapersModel) {
  const auto spec =
      load_experiment(std::string(REACH_SOURCE_DIR) + "/configs/experiments/paper-matrix.toml");
  EXPECT_EQ(spec.runs.size(), 22u);
  EXPECT_EQ(spec.multipliers, (std::vector<int64_t>{1, 2, 4}));
  for (const auto& run : spec.runs) {
    auto config = train::load_train_config(run.config_path, run.overrides);
    config.model.vocab_size = 32768;
    config.model.reach = config.seq_len;
    EXPECT_EQ(config.seq_len, 1024) << run.name;
    EXPECT_EQ(config.batch * config.seq_len, 32768) << run.name;
    model::Gpt net(config.model);
    const int64_t thetas = config.model.schedule == model::AlphaSchedule::learned ? 16 : 0;
    EXPECT_EQ(model::parameter_count(*net), 60850688 + thetas) << run.name;
  }
}

}  // namespace
}  // namespace reach::experiment
