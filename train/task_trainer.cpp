#include "train/task_trainer.hpp"

#include <fmt/core.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "train/checkpoint.hpp"
#include "train/optimizer.hpp"

namespace reach::train {
namespace fs = std::filesystem;
namespace {

std::atomic<int> g_task_stop{0};
extern "C" void on_task_stop(int signal) { g_task_stop = signal; }

// Stream tags keep training and evaluation examples apart for one seed.
constexpr uint64_t kTrainStream = 0x7261696e;  // "rain"
constexpr uint64_t kEvalStream = 0x6576616c;   // "eval"

struct Batch {
  torch::Tensor tokens, targets;  // [B, T] int64; targets -1 where nothing is asked
  std::vector<data::tasks::TaskExample> examples;
};

Batch make_batch(const data::tasks::SyntheticTask& task, int64_t length, int64_t size,
                 std::mt19937_64& rng) {
  Batch batch;
  batch.tokens = torch::empty({size, length}, torch::kInt64);
  batch.targets = torch::empty({size, length}, torch::kInt64);
  auto* tokens = batch.tokens.data_ptr<int64_t>();
  auto* targets = batch.targets.data_ptr<int64_t>();
  for (int64_t b = 0; b < size; ++b) {
    batch.examples.push_back(task.sample(length, rng));
    const auto& ex = batch.examples.back();
    std::copy(ex.tokens.begin(), ex.tokens.end(), tokens + b * length);
    std::copy(ex.targets.begin(), ex.targets.end(), targets + b * length);
  }
  return batch;
}

// Mean answer accuracy of the batch given logits [B, T, V].
double batch_accuracy(const Batch& batch, const torch::Tensor& logits) {
  const auto predicted = logits.argmax(-1).to(torch::kInt32).contiguous();
  const int64_t length = predicted.size(1);
  const auto* p = predicted.data_ptr<int32_t>();
  double sum = 0;
  for (size_t b = 0; b < batch.examples.size(); ++b) {
    std::vector<int32_t> row(p + static_cast<int64_t>(b) * length,
                             p + static_cast<int64_t>(b + 1) * length);
    sum += data::tasks::answer_accuracy(batch.examples[b], row);
  }
  return sum / static_cast<double>(batch.examples.size());
}

void write_text_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out) throw std::runtime_error("cannot write '" + tmp.string() + "'");
  }
  fs::rename(tmp, path);
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("missing file '" + path.string() + "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void set_threads(const TaskRunConfig& c) {
  torch::set_num_threads(c.threads > 0 ? c.threads
                                       : static_cast<int>(std::thread::hardware_concurrency()));
}

}  // namespace

TaskTrainResult train_task_model(const TaskRunConfig& c, bool quiet, model::Gpt* trained) {
  set_threads(c);
  const auto task = make_task(c);
  const fs::path dir(c.out_dir);
  fs::create_directories(dir);
  write_text_atomically(dir / "config.toml", to_toml(c));

  torch::manual_seed(c.seed);
  model::Gpt net(c.model);
  torch::optim::AdamW optimizer = make_adamw(*net, c.lr, c.weight_decay);
  if (!quiet) {
    fmt::print(stderr,
               "[tasks] {} at length {}: {} parameters, attention={} normalizer={} "
               "positions={}, {} steps of batch {}\n",
               task->name(), c.train_length, model::parameter_count(*net),
               model::to_string(c.model.attention), model::to_string(c.model.normalizer),
               model::to_string(c.model.positions), c.steps, c.batch);
  }
  std::ofstream metrics(dir / "metrics.jsonl", std::ios::trunc);
  g_task_stop = 0;
  auto previous_int = std::signal(SIGINT, on_task_stop);
  auto previous_term = std::signal(SIGTERM, on_task_stop);

  TaskTrainResult result;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < c.steps; ++step) {
    const double lr = warmup_cosine_lr(step, c.steps, c.warmup, c.lr, c.min_lr);
    for (auto& group : optimizer.param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    }
    // Each step's examples come from an RNG seeded by (seed, step) alone.
    std::seed_seq seq{c.seed, kTrainStream, static_cast<uint64_t>(step)};
    std::mt19937_64 rng(seq);
    const Batch batch = make_batch(*task, c.train_length, c.batch, rng);
    optimizer.zero_grad();
    auto logits = net(batch.tokens);
    auto loss = torch::nn::functional::cross_entropy(
        logits.view({-1, c.model.vocab_size}), batch.targets.view({-1}),
        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(data::tasks::kIgnore));
    loss.backward();
    torch::nn::utils::clip_grad_norm_(net->parameters(), c.grad_clip);
    optimizer.step();
    result.final_loss = loss.item<double>();
    result.steps = step + 1;
    if (!std::isfinite(result.final_loss)) {
      throw std::runtime_error(fmt::format("task training diverged: loss is {} at step {}",
                                           result.final_loss, step + 1));
    }
    const bool report = (step + 1) % c.log_every == 0 || step + 1 == c.steps;
    nlohmann::json line{{"step", step + 1}, {"loss", result.final_loss}, {"lr", lr}};
    if (report) {
      result.final_batch_accuracy = batch_accuracy(batch, logits.detach());
      line["batch_accuracy"] = result.final_batch_accuracy;
    }
    metrics << line.dump() << "\n";
    metrics.flush();
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!quiet && report) {
      fmt::print(stderr, "[tasks] step {}/{} loss {:.4f} batch accuracy {:.3f} ({:.0f}s)\n",
                 step + 1, c.steps, result.final_loss, result.final_batch_accuracy, result.seconds);
    }
    if (g_task_stop != 0) {
      result.interrupted = true;
      break;
    }
  }
  std::signal(SIGINT, previous_int);
  std::signal(SIGTERM, previous_term);
  const fs::path weights = dir / "model.safetensors", tmp = dir / "model.safetensors.tmp";
  save_model_weights(tmp.string(), *net);
  fs::rename(tmp, weights);
  if (trained) *trained = net;
  return result;
}

TaskRun load_task_run(const std::string& dir) {
  const fs::path path(dir);
  if (!fs::is_directory(path)) {
    throw std::runtime_error("task run '" + dir + "' is not a directory");
  }
  TaskRun run;
  try {
    run.config = parse_task_config(read_text(path / "config.toml"), {});
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error("task run '" + dir + "': config.toml: " + e.what());
  }
  run.model = model::Gpt(run.config.model);
  if (!fs::exists(path / "model.safetensors")) {
    throw std::runtime_error("task run '" + dir +
                             "' has no model.safetensors (training did not finish?)");
  }
  load_model_weights((path / "model.safetensors").string(), *run.model, "task run '" + dir + "'");
  return run;
}

std::vector<LengthAccuracy> evaluate_task_model(
    model::Gpt& model, const TaskRunConfig& c, const std::vector<int64_t>& multipliers,
    const std::function<void(const LengthAccuracy&)>& progress,
    const BatchProgress& batch_progress) {
  set_threads(c);
  const auto task = make_task(c);
  torch::NoGradGuard no_grad;
  model->eval();
  const torch::Device device = model->parameters().front().device();
  std::vector<LengthAccuracy> out;
  for (int64_t m : multipliers) {
    LengthAccuracy r;
    r.multiplier = m;
    r.length = m * c.train_length;
    if (r.length > c.max_length) {
      r.skipped = fmt::format("longer than eval.max_length = {}", c.max_length);
    } else {
      const auto t0 = std::chrono::steady_clock::now();
      std::seed_seq seq{c.seed, kEvalStream, static_cast<uint64_t>(r.length)};
      std::mt19937_64 rng(seq);
      double sum = 0;
      for (int64_t done = 0; done < c.examples;) {
        const int64_t size = std::min(c.eval_batch, c.examples - done);
        const Batch batch = make_batch(*task, r.length, size, rng);
        // The model may be on a GPU (`reach tasks eval --device`); accuracy is counted on the CPU.
        const auto logits = model->forward(batch.tokens.to(device)).to(torch::kCPU);
        sum += batch_accuracy(batch, logits) * static_cast<double>(size);
        done += size;
        if (batch_progress) {
          batch_progress(
              r.length, done, c.examples,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
      }
      r.examples = c.examples;
      r.accuracy = sum / static_cast<double>(c.examples);
      r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    out.push_back(r);
    if (progress) progress(r);
  }
  model->train();
  return out;
}

}  // namespace reach::train
