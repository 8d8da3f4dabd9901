// Synthetic-task runs end to end at toy size: training writes a run directory that loads
// back to the same model, evaluation covers every multiplier (skipping those above
// max_length), and a small model actually learns max retrieval.
#include "train/task_trainer.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "io/remove_tree.hpp"
#include "train/device.hpp"

namespace reach::train {
namespace {

namespace fs = std::filesystem;

TaskRunConfig toy_config(const std::string& dir, const std::vector<std::string>& extra) {
  std::vector<std::string> overrides = {"run.out_dir=\"" + dir + "\"",
                                        "run.threads=1",
                                        "task.num_values=8",
                                        "task.items=4",
                                        "train.length=12",
                                        "train.batch=8",
                                        "train.steps=3",
                                        "eval.examples=4",
                                        "eval.batch=2",
                                        "eval.max_length=48",
                                        "eval.multipliers=1,2,4,8"};
  overrides.insert(overrides.end(), extra.begin(), extra.end());
  return parse_task_config("", overrides);
}

TEST(TaskTrainer, RunDirectoryLoadsBackToTheSameModel) {
  const auto dir = (fs::temp_directory_path() / "reach_task_run_test").string();
  reach::io::remove_tree(dir);
  const auto c = toy_config(dir, {"model.normalizer=asentmax", "model.positions=nape"});
  model::Gpt trained{nullptr};
  const auto result = train_task_model(c, {.quiet = true}, &trained);
  EXPECT_EQ(result.steps, 3);
  EXPECT_TRUE(std::isfinite(result.final_loss));
  for (const char* file : {"config.toml", "model.safetensors", "metrics.jsonl"}) {
    EXPECT_TRUE(fs::exists(fs::path(dir) / file)) << file;
  }
  auto run = load_task_run(dir);
  EXPECT_EQ(run.config.model.normalizer, model::Normalizer::asentmax);
  torch::NoGradGuard no_grad;
  trained->eval();
  run.model->eval();
  auto x = torch::randint(0, c.model.vocab_size, {2, 12}, torch::kInt64);
  EXPECT_TRUE(torch::equal(trained->forward(x), run.model->forward(x)));

  const auto acc = evaluate_task_model(run.model, run.config, {1, 2, 4, 8}, nullptr);
  ASSERT_EQ(acc.size(), 4u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(acc[i].skipped.empty());
    EXPECT_EQ(acc[i].examples, 4);
    EXPECT_GE(acc[i].accuracy, 0.0);
    EXPECT_LE(acc[i].accuracy, 1.0);
  }
  EXPECT_EQ(acc[3].length, 96);
  EXPECT_FALSE(acc[3].skipped.empty());  // 96 > max_length 48
  reach::io::remove_tree(dir);
}

TEST(TaskTrainer, NeedleTaskConfigsNameTheirErrors) {
  auto message = [](const std::vector<std::string>& overrides) {
    try {
      parse_task_config("", overrides);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({"task.name=\"needle\"", "task.corpus=\"/nonexistent/kjv.txt\""})
                .find("task.corpus '/nonexistent/kjv.txt' does not exist"),
            std::string::npos);
  EXPECT_NE(message({"task.name=\"needle\"", "task.needles=2", "task.queries=3",
                     "task.corpus=\"" REACH_SOURCE_DIR "/README.md\""})
                .find("task.queries must be in 1..task.needles"),
            std::string::npos);
  EXPECT_NE(message({"task.name=\"variable_tracking\"", "task.hops=0",
                     "task.corpus=\"" REACH_SOURCE_DIR "/README.md\""})
                .find("task.hops must be >= 1"),
            std::string::npos);
  EXPECT_NE(message({"task.name=\"needle\"", "train.length=100",
                     "task.corpus=\"" REACH_SOURCE_DIR "/README.md\""})
                .find("below the task's minimum length"),
            std::string::npos);
  const auto c = parse_task_config("", {"task.name=\"needle\"", "train.length=512",
                                        "task.corpus=\"" REACH_SOURCE_DIR "/docs\""});
  EXPECT_EQ(c.model.vocab_size, 262);
  EXPECT_EQ(parse_task_config(to_toml(c), {}).corpus, REACH_SOURCE_DIR "/docs");
}

TEST(TaskTrainer, MissingRunGivesAClearError) {
  EXPECT_THROW(load_task_run("/nonexistent/run"), std::runtime_error);
  const auto dir = (fs::temp_directory_path() / "reach_task_run_empty").string();
  fs::create_directories(dir);
  try {
    load_task_run(dir);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("config.toml"), std::string::npos) << e.what();
  }
  // A config but no weights (training never finished), then weights that are not safetensors.
  const auto c = parse_task_config("", {"run.out_dir=\"" + dir + "\""});
  std::ofstream(fs::path(dir) / "config.toml") << to_toml(c);
  try {
    load_task_run(dir);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no model.safetensors"), std::string::npos) << e.what();
  }
  std::ofstream(fs::path(dir) / "model.safetensors") << "not a safetensors file";
  EXPECT_THROW(load_task_run(dir), std::runtime_error);
  reach::io::remove_tree(dir);
}

// Chance is ~1/8 for the maximum of 4 draws from 8 values (well above 1/8, as large
// values are likelier maxima, but far below what a trained model reaches).
TEST(TaskTrainer, SmallModelLearnsMaxRetrieval) {
  const auto dir = (fs::temp_directory_path() / "reach_task_learns").string();
  reach::io::remove_tree(dir);
  const auto c = toy_config(
      dir, {"train.steps=300", "train.batch=16", "train.lr=0.01", "model.attention=dense",
            "model.positions=nope", "eval.examples=64", "eval.batch=64"});
  model::Gpt trained{nullptr};
  train_task_model(c, {.quiet = true}, &trained);
  const auto acc = evaluate_task_model(trained, c, {1}, nullptr);
  EXPECT_GT(acc[0].accuracy, 0.8);
  EXPECT_DOUBLE_EQ(acc[0].token_accuracy, acc[0].accuracy);  // one-token answers
  // The evaluation runs the head on the answer positions only; the full forward's logits (the
  // `logits` hook) give the same accuracies, here where most answers are right.
  const auto full = evaluate_task_model(
      trained, c, {1, 2}, nullptr, {}, [&](const torch::Tensor& t) { return trained->forward(t); });
  const auto plain = evaluate_task_model(trained, c, {1, 2}, nullptr);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_DOUBLE_EQ(plain[i].accuracy, full[i].accuracy);
    EXPECT_DOUBLE_EQ(plain[i].token_accuracy, full[i].token_accuracy);
    EXPECT_LT(plain[i].peak_gpu_mib, 0);  // not measured on the CPU
  }
  EXPECT_DOUBLE_EQ(plain[0].accuracy, acc[0].accuracy);
  reach::io::remove_tree(dir);
}

// Seed 003's recipe trains at 48 +- 16: each step draws its length from [32, 64], the same
// for a given seed and step, every length of the range turning up; fixed without a minimum.
TEST(TaskTrainer, StepLengthsVaryOverTheTrainingRange) {
  const auto c =
      parse_task_config("", {"task.name=mqar", "train.length=64", "train.min_length=32"});
  std::set<int64_t> seen;
  for (int64_t step = 0; step < 2000; ++step) {
    const int64_t length = training_step_length(c, step);
    ASSERT_GE(length, 32);
    ASSERT_LE(length, 64);
    ASSERT_EQ(length, training_step_length(c, step));
    seen.insert(length);
  }
  EXPECT_EQ(seen.size(), 33u);
  const auto fixed = parse_task_config("", {"task.name=mqar", "train.length=64"});
  EXPECT_EQ(training_step_length(fixed, 7), 64);
}

// The associative-recall run: trains over varying lengths (sequences longer than the
// context by the queries and answers) and evaluates at multiples of the longest.
TEST(TaskTrainer, AssociativeRecallTrainsOverVaryingLengths) {
  const auto dir = (fs::temp_directory_path() / "reach_task_mqar").string();
  reach::io::remove_tree(dir);
  const auto c = parse_task_config(
      "", {"run.out_dir=\"" + dir + "\"", "run.threads=1", "task.name=mqar", "train.length=64",
           "train.min_length=32", "train.batch=4", "train.steps=4", "model.layers=1",
           "model.d_model=32", "model.heads=2", "model.attention=dense", "eval.examples=2",
           "eval.batch=2", "eval.multipliers=1,2"});
  model::Gpt trained{nullptr};
  const auto result = train_task_model(c, {.quiet = true}, &trained);
  EXPECT_EQ(result.steps, 4);
  EXPECT_TRUE(std::isfinite(result.final_loss));
  const auto acc = evaluate_task_model(trained, c, {1, 2}, nullptr);
  ASSERT_EQ(acc.size(), 2u);
  EXPECT_EQ(acc[1].length, 128);
  EXPECT_EQ(acc[1].examples, 2);
  for (const auto& r : acc) {
    EXPECT_GE(r.token_accuracy, r.accuracy);  // all 13 tokens right implies each is
    EXPECT_LE(r.token_accuracy, 1.0);
  }
  reach::io::remove_tree(dir);
}

std::vector<std::pair<int64_t, double>> losses(const std::string& dir) {
  std::ifstream in(fs::path(dir) / "metrics.jsonl");
  std::vector<std::pair<int64_t, double>> out;
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    out.emplace_back(j.at("step").get<int64_t>(), j.at("loss").get<double>());
  }
  return out;
}

// A task run stopped after step 4 (last checkpoint at 3) and resumed gives the loss curve of
// an uninterrupted run, bit for bit; resuming with a changed task key is refused.
TEST(TaskTrainer, ResumeIsExact) {
  const auto straight = (fs::temp_directory_path() / "reach_task_resume_straight").string();
  const auto cut = (fs::temp_directory_path() / "reach_task_resume_cut").string();
  reach::io::remove_tree(straight);
  reach::io::remove_tree(cut);
  const std::vector<std::string> extra{"train.steps=6", "train.checkpoint_every=3",
                                       "train.log_every=2"};
  train_task_model(toy_config(straight, extra), {.quiet = true});
  train_task_model(toy_config(cut, extra), {.quiet = true, .stop_after_step = 4});
  EXPECT_EQ(losses(cut).size(), 4u);
  try {
    auto changed = extra;
    changed.push_back("task.items=3");
    train_task_model(toy_config(cut, changed), {.resume = true, .quiet = true});
    FAIL() << "a resume with another task.items was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("task.items"), std::string::npos) << e.what();
  }
  const auto resumed = train_task_model(toy_config(cut, extra), {.resume = true, .quiet = true});
  EXPECT_EQ(resumed.steps, 6);
  EXPECT_EQ(losses(cut), losses(straight));
  ASSERT_EQ(losses(straight).size(), 6u);
  reach::io::remove_tree(straight);
  reach::io::remove_tree(cut);
}

// train.init_from: a run starts from another run's weights (a curriculum's next stage, here at
// twice the length), from a checkpoint directory or a .safetensors file; a missing path, a
// directory without weights, weights of another model config, and weights inside a run
// directory that --overwrite would delete are clear errors naming the key.
TEST(TaskTrainer, InitFromStartsFromAnotherRunsWeights) {
  const auto first = (fs::temp_directory_path() / "reach_task_init_first").string();
  const auto second = (fs::temp_directory_path() / "reach_task_init_second").string();
  reach::io::remove_tree(first);
  reach::io::remove_tree(second);
  model::Gpt stage1{nullptr}, stage2{nullptr};
  train_task_model(toy_config(first, {"train.checkpoint_every=2"}), {.quiet = true}, &stage1);
  // lr 1e-12 for one step: the second stage's weights are the first's to ~1e-12.
  const std::vector<std::string> next{"train.init_from=\"" + first + "\"",
                                      "train.length=24",
                                      "train.steps=1",
                                      "train.lr=1e-12",
                                      "train.min_lr=1e-12",
                                      "train.warmup=0"};
  train_task_model(toy_config(second, next), {.quiet = true}, &stage2);
  const auto a = stage1->named_parameters(), b = stage2->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& p : a) {
    EXPECT_TRUE(torch::allclose(p.value(), b[p.key()], 0, 1e-9)) << p.key();
  }
  reach::io::remove_tree(second);
  auto from_checkpoint = next;
  from_checkpoint[0] = "train.init_from=\"" + first + "/checkpoints/step-00000002\"";
  EXPECT_NO_THROW(train_task_model(toy_config(second, from_checkpoint), {.quiet = true}));
  reach::io::remove_tree(second);
  auto from_file = next;
  from_file[0] = "train.init_from=\"" + first + "/model.safetensors\"";
  EXPECT_NO_THROW(train_task_model(toy_config(second, from_file), {.quiet = true}));
  reach::io::remove_tree(second);

  auto expect_error = [&](std::vector<std::string> extra, const std::string& want,
                          TaskTrainOptions options) {
    try {
      train_task_model(toy_config(second, extra), options);
      FAIL() << "accepted: " << want;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
    reach::io::remove_tree(second);
  };
  const TaskTrainOptions quiet{.quiet = true};
  expect_error({"train.init_from=\"" + first + "/nothing\""},
               "train.init_from '" + first + "/nothing': no such file or directory", quiet);
  expect_error({"train.init_from=\"" + first + "/checkpoints\""}, "no model.safetensors there",
               quiet);
  expect_error({"train.init_from=\"" + first + "\"", "model.d_model=48"},
               "the model config must match", quiet);
  TaskTrainOptions overwrite{.quiet = true};
  overwrite.overwrite = true;
  try {
    train_task_model(toy_config(first, {"train.init_from=\"" + first + "\""}), overwrite);
    FAIL() << "--overwrite of the run the weights come from was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("which --overwrite would delete first"), std::string::npos)
        << e.what();
  }
  try {  // the same run directory spelt with a trailing slash
    train_task_model(toy_config(first + "/", {"train.init_from=\"" + first + "\""}), overwrite);
    FAIL() << "--overwrite of the run the weights come from (run.out_dir with '/') was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("which --overwrite would delete first"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(fs::exists(fs::path(first) / "model.safetensors"));
  reach::io::remove_tree(first);
}

TEST(TaskTrainerGpu, TrainsAndEvaluatesOnTheGpu) {
  if (!resolve_device("auto").is_cuda()) GTEST_SKIP() << "no CUDA GPU";
  const auto dir = (fs::temp_directory_path() / "reach_task_gpu").string();
  reach::io::remove_tree(dir);
  const auto c = toy_config(dir, {"train.steps=20", "train.device=cuda"});
  model::Gpt trained{nullptr};
  const auto result = train_task_model(c, {.quiet = true}, &trained);
  EXPECT_TRUE(std::isfinite(result.final_loss));
  EXPECT_TRUE(trained->parameters().front().is_cuda());
  const auto acc = evaluate_task_model(trained, c, {1, 2}, nullptr);
  ASSERT_EQ(acc.size(), 2u);
  EXPECT_GE(acc[0].accuracy, 0.0);
  EXPECT_EQ(losses(dir).size(), 20u);
  reach::io::remove_tree(dir);
}

}  // namespace
}  // namespace reach::train
