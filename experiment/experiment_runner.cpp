#include "experiment/experiment_runner.hpp"

#include <fmt/core.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "experiment/inference_speed.hpp"
#include "io/remove_tree.hpp"
#include "model/gpt.hpp"
#include "train/checkpoint.hpp"
#include "train/device.hpp"
#include "train/trainer.hpp"

namespace reach::experiment {
namespace fs = std::filesystem;

train::TrainConfig run_config(const ExperimentRun& run, const std::string& directory,
                              uint64_t seed) {
  auto overrides = run.overrides;
  overrides.push_back("run.out_dir=" + directory);
  overrides.push_back(fmt::format("run.seed={}", seed));
  try {
    return run.config_path.empty() ? train::parse_train_config("", overrides)
                                   : train::load_train_config(run.config_path, overrides);
  } catch (const std::exception& e) {
    throw std::invalid_argument(fmt::format("experiment: run '{}': {}", run.name, e.what()));
  }
}

namespace {

constexpr const char* kResultFile = "result.json";

nlohmann::json to_json(const SeedResult& r, const std::string& config_toml) {
  nlohmann::json lengths = nlohmann::json::array();
  for (const auto& l : r.lengths) {
    lengths.push_back({{"length", l.length},
                       {"windows", l.windows},
                       {"tokens", l.tokens},
                       {"mean_nll", l.mean_nll},
                       {"perplexity", l.perplexity},
                       {"bucket_nll", l.bucket_nll}});
  }
  return {{"format", "reach-experiment-result-1"},
          {"seed", r.seed},
          {"checkpoint", r.checkpoint},
          {"seq_len", r.seq_len},
          {"steps", r.steps},
          {"tokens_trained", r.tokens_trained},
          {"parameters", r.parameters},
          {"train_seconds", r.train_seconds},
          {"inference_tokens_per_s", r.inference_tokens_per_s},
          {"frozen_inference_tokens_per_s", r.frozen_inference_tokens_per_s},
          {"device", r.device},
          {"config", config_toml},
          {"lengths", lengths}};
}

void write_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw std::runtime_error(fmt::format("experiment: cannot write {}", tmp.string()));
  }
  fs::rename(tmp, path);
}

// Trains (or resumes) one run and seed, evaluates its last checkpoint, writes result.json.
// Returns false when training was interrupted.
bool train_and_evaluate(const ExperimentSpec& spec, const ExperimentRun& run, uint64_t seed,
                        const RunnerOptions& options, SeedResult& out) {
  const std::string directory = run_directory(spec, run, seed);
  const auto config = run_config(run, directory, seed);
  const auto say = [&](const std::string& line) {
    if (options.log) options.log(line);
  };
  const RunState state = run_state(directory);
  if (state == RunState::fresh && fs::exists(directory)) {
    // No checkpoint: nothing of this run can be resumed; its partial log goes.
    reach::io::remove_tree(directory);
  }
  say(fmt::format(
      "{} seed {}: {}", run.name, seed,
      state == RunState::resumable ? "resuming from its newest checkpoint" : "training"));
  const auto start = std::chrono::steady_clock::now();
  const auto trained =
      train::run_training(config, {.resume = state == RunState::resumable, .quiet = options.quiet});
  if (trained.interrupted) return false;
  out.train_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  auto checkpoint = train::load_checkpoint(trained.checkpoint);
  checkpoint.model->eval();
  // Evaluated where it trained (a GPU run's 4x evaluation on the CPU would take longer than
  // its training), in float32 as `reach eval` does by default.
  const torch::Device device = train::resolve_device(config.device);
  checkpoint.model->to(device);
  torch::NoGradGuard no_grad;
  const auto data = train::load_token_data(
      config.corpus, reach::data::split_options(config.heldout_fraction, config.heldout_files),
      trained.checkpoint, config.cache_dir);
  std::vector<int64_t> lengths;
  for (const int64_t m : spec.multipliers) lengths.push_back(m * config.seq_len);
  say(fmt::format("{} seed {}: evaluating at {} tokens x multipliers", run.name, seed,
                  config.seq_len));
  out.seed = seed;
  out.directory = directory;
  out.checkpoint = trained.checkpoint;
  out.seq_len = config.seq_len;
  out.steps = checkpoint.step;
  out.tokens_trained = checkpoint.step * config.batch * config.seq_len;
  out.parameters = model::parameter_count(*checkpoint.model);
  out.lengths =
      eval::evaluate_lengths([&](const torch::Tensor& x) { return checkpoint.model(x.to(device)); },
                             data.heldout, lengths, spec.max_tokens);
  out.device = device.str();
  const bool bf16 = train::resolve_bf16(config.precision, device);
  const int64_t vocab = checkpoint.model->config().vocab_size;
  say(fmt::format("{} seed {}: timing inference at {} x {} tokens", run.name, seed, config.batch,
                  config.seq_len));
  out.inference_tokens_per_s =
      inference_tokens_per_s(checkpoint.model, device, bf16, config.batch, config.seq_len, vocab);
  if (model::is_dilated(config.model.attention) &&
      config.model.schedule == pattern::AlphaSchedule::learned) {
    checkpoint.model->freeze_schedules();
    out.frozen_inference_tokens_per_s =
        inference_tokens_per_s(checkpoint.model, device, bf16, config.batch, config.seq_len, vocab);
  }
  write_atomically(fs::path(directory) / kResultFile, to_json(out, train::to_toml(config)).dump(2));
  return true;
}

}  // namespace

RunState run_state(const std::string& directory) {
  if (fs::is_regular_file(fs::path(directory) / kResultFile)) return RunState::finished;
  // Resumable only when a checkpoint loads (the training falls back past newer broken ones the
  // same way); a directory whose checkpoints are all broken starts over.
  return train::newest_valid_checkpoint(directory).dir.empty() ? RunState::fresh
                                                               : RunState::resumable;
}

SeedResult read_seed_result(const std::string& directory) {
  const auto path = fs::path(directory) / kResultFile;
  std::ifstream in(path);
  const auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value("format", "") != "reach-experiment-result-1") {
    throw std::runtime_error(fmt::format(
        "experiment: {} is not a readable result (remove it to redo the run)", path.string()));
  }
  SeedResult r;
  r.seed = j.at("seed").get<uint64_t>();
  r.directory = directory;
  r.checkpoint = j.at("checkpoint").get<std::string>();
  r.seq_len = j.at("seq_len").get<int64_t>();
  r.steps = j.at("steps").get<int64_t>();
  r.tokens_trained = j.at("tokens_trained").get<int64_t>();
  r.parameters = j.at("parameters").get<int64_t>();
  r.train_seconds = j.at("train_seconds").get<double>();
  r.inference_tokens_per_s = j.value("inference_tokens_per_s", 0.0);
  r.frozen_inference_tokens_per_s = j.value("frozen_inference_tokens_per_s", 0.0);
  r.device = j.value("device", "");
  for (const auto& l : j.at("lengths")) {
    eval::LengthResult length;
    length.length = l.at("length").get<int64_t>();
    length.windows = l.at("windows").get<int64_t>();
    length.tokens = l.at("tokens").get<int64_t>();
    length.mean_nll = l.at("mean_nll").get<double>();
    length.perplexity = l.at("perplexity").get<double>();
    length.bucket_nll = l.at("bucket_nll").get<std::vector<double>>();
    r.lengths.push_back(std::move(length));
  }
  return r;
}

ExperimentResult run_experiment(const ExperimentSpec& spec, const RunnerOptions& options) {
  ExperimentResult result;
  const auto say = [&](const std::string& line) {
    if (options.log) options.log(line);
  };
  for (const auto& run : spec.runs) {
    RunResult run_result{run, {}};
    for (const uint64_t seed : run.seeds) {
      const std::string directory = run_directory(spec, run, seed);
      // Parsing every config first makes a bad run an error before hours of earlier runs.
      const auto config = run_config(run, directory, seed);
      const RunState state = run_state(directory);
      if (state == RunState::finished) {
        auto finished = read_seed_result(directory);
        const auto stored =
            nlohmann::json::parse(std::ifstream(fs::path(directory) / kResultFile), nullptr, false)
                .value("config", "");
        if (stored != train::to_toml(config)) {
          throw std::runtime_error(fmt::format(
              "experiment: run '{}' seed {} finished with a different configuration than the "
              "matrix now gives; remove {} to redo it, or restore the matrix",
              run.name, seed, directory));
        }
        if (finished.lengths.size() != spec.multipliers.size()) {
          throw std::runtime_error(fmt::format(
              "experiment: run '{}' seed {} was evaluated at {} lengths, the matrix asks for {}; "
              "remove {} to redo it",
              run.name, seed, finished.lengths.size(), spec.multipliers.size(),
              (fs::path(directory) / kResultFile).string()));
        }
        say(fmt::format("{} seed {}: finished earlier, skipped ({})", run.name, seed, directory));
        run_result.seeds.push_back(std::move(finished));
        continue;
      }
      if (options.dry_run) {
        say(fmt::format("{} seed {}: would {} ({} steps of {} x {} tokens)", run.name, seed,
                        state == RunState::resumable ? "resume" : "train", config.steps,
                        config.batch, config.seq_len));
        continue;
      }
      SeedResult seed_result;
      if (!train_and_evaluate(spec, run, seed, options, seed_result)) {
        say(fmt::format("{} seed {}: interrupted; checkpoint kept, rerun to resume", run.name,
                        seed));
        result.interrupted = true;
        result.runs.push_back(std::move(run_result));
        return result;
      }
      run_result.seeds.push_back(std::move(seed_result));
    }
    result.runs.push_back(std::move(run_result));
  }
  return result;
}

}  // namespace reach::experiment
