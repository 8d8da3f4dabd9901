#include "train/task_trainer.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>

#ifdef REACH_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include "train/checkpoint.hpp"
#include "train/cpu_threads.hpp"
#include "train/device.hpp"
#include "train/loop.hpp"
#include "train/loss_chunk_rows.hpp"
#include "train/optimizer.hpp"
#include "train/run_directory.hpp"

namespace reach::train {
namespace fs = std::filesystem;
namespace {

// A task run directory: what it holds besides its lock (config.toml is rewritten by every
// run), and how messages name it.
const RunDirectoryRules kTaskRunRules{"run directory",
                                      "[tasks]",
                                      {"checkpoints", "metrics.jsonl", "model.safetensors",
                                       "accuracy.json", "accuracy.md", "accuracy.png"}};

// Stream tags keep training and evaluation examples apart for one seed.
constexpr uint64_t kTrainStream = 0x7261696e;  // "rain"
constexpr uint64_t kEvalStream = 0x6576616c;   // "eval"

struct Batch {
  torch::Tensor tokens, targets;  // [B, T] int64; targets -1 where nothing is asked
  std::vector<data::tasks::TaskExample> examples;
};

// `size` examples of task length `length` (of task.sequence_length(length) tokens each).
Batch make_batch(const data::tasks::SyntheticTask& task, int64_t length, int64_t size,
                 std::mt19937_64& rng) {
  const int64_t tokens_per_example = task.sequence_length(length);
  Batch batch;
  batch.tokens = torch::empty({size, tokens_per_example}, torch::kInt64);
  batch.targets = torch::empty({size, tokens_per_example}, torch::kInt64);
  auto* tokens = batch.tokens.data_ptr<int64_t>();
  auto* targets = batch.targets.data_ptr<int64_t>();
  for (int64_t b = 0; b < size; ++b) {
    batch.examples.push_back(task.sample(length, rng));
    const auto& ex = batch.examples.back();
    if (static_cast<int64_t>(ex.tokens.size()) != tokens_per_example) {
      throw std::logic_error(task.name() + ": an example of length " + std::to_string(length) +
                             " has " + std::to_string(ex.tokens.size()) + " tokens, not " +
                             std::to_string(tokens_per_example));
    }
    std::copy(ex.tokens.begin(), ex.tokens.end(), tokens + b * tokens_per_example);
    std::copy(ex.targets.begin(), ex.targets.end(), targets + b * tokens_per_example);
  }
  return batch;
}

// Mean tokens of a training step (for tokens/s): over the lengths a step may draw.
int64_t mean_step_tokens(const data::tasks::SyntheticTask& task, const TaskRunConfig& c) {
  const int64_t lo = c.train_min_length > 0 ? c.train_min_length : c.train_length;
  double sum = 0;
  for (int64_t l = lo; l <= c.train_length; ++l) {
    sum += static_cast<double>(task.sequence_length(l));
  }
  return std::llround(sum / static_cast<double>(c.train_length - lo + 1) *
                      static_cast<double>(c.batch));
}

// Mean answer accuracy of the batch given the predicted tokens [B, T] (any integer type, any
// device; positions that are no answer's may hold anything); `tokens` (may be null) gets the
// fraction of answer tokens right, counted one by one.
double prediction_accuracy(const Batch& batch, const torch::Tensor& predictions,
                           double* tokens = nullptr) {
  const auto predicted = predictions.to(torch::kCPU, torch::kInt32).contiguous();
  const int64_t length = predicted.size(1);
  const auto* p = predicted.data_ptr<int32_t>();
  double sum = 0;
  int64_t right = 0, asked = 0;
  for (size_t b = 0; b < batch.examples.size(); ++b) {
    const auto& ex = batch.examples[b];
    std::vector<int32_t> row(p + static_cast<int64_t>(b) * length,
                             p + static_cast<int64_t>(b + 1) * length);
    sum += data::tasks::answer_accuracy(ex, row);
    for (auto [begin, end] : ex.answers) {
      for (int64_t i = begin; i < end; ++i) {
        right += row[static_cast<size_t>(i)] == ex.targets[static_cast<size_t>(i)] ? 1 : 0;
        ++asked;
      }
    }
  }
  if (tokens != nullptr) *tokens = asked > 0 ? static_cast<double>(right) / asked : 0.0;
  return sum / static_cast<double>(batch.examples.size());
}

// The same given logits [B, T, V] (the argmax is taken where the logits are).
double batch_accuracy(const Batch& batch, const torch::Tensor& logits, double* tokens = nullptr) {
  return prediction_accuracy(batch, logits.argmax(-1), tokens);
}

// The model's predictions [B, T] (int64, on the model's device) at the batch's answer
// positions only (-1 elsewhere): the head runs on those rows of the final hidden states, so
// evaluating a long sequence never forms its [B, T, V] logits.
torch::Tensor answer_predictions(model::Gpt& model, const Batch& batch,
                                 const torch::Tensor& tokens) {
  const auto hidden = model->hidden_states(tokens);  // [B, T, D]
  const int64_t length = tokens.size(1);
  std::vector<int64_t> rows;
  for (size_t b = 0; b < batch.examples.size(); ++b) {
    for (auto [begin, end] : batch.examples[b].answers) {
      for (int64_t i = begin; i < end; ++i) rows.push_back(static_cast<int64_t>(b) * length + i);
    }
  }
  auto predictions =
      torch::full({tokens.size(0), length}, -1, torch::dtype(torch::kLong).device(tokens.device()));
  if (rows.empty()) return predictions;
  const auto index = torch::tensor(rows, torch::kLong).to(tokens.device());
  const auto picked = hidden.reshape({-1, hidden.size(-1)}).index_select(0, index);
  predictions.view({-1}).index_copy_(0, index, model->head(picked).argmax(-1));
  return predictions;
}

// Peak GPU memory of `fn` in MiB beyond what was allocated before it (the CUDA caching
// allocator's statistics), or -1 when the model is not on a CUDA device.
double gpu_peak_mib(const torch::Device& device, const std::function<void()>& fn) {
#ifdef REACH_TORCH_CUDA
  if (device.is_cuda()) {
    namespace alloc = c10::cuda::CUDACachingAllocator;
    const c10::DeviceIndex index =
        device.index() < 0 ? c10::cuda::current_device() : device.index();
    c10::cuda::device_synchronize();
    alloc::resetPeakStats(index);
    const int64_t base = alloc::getDeviceStats(index).allocated_bytes[0].current;  // 0: all pools
    fn();
    c10::cuda::device_synchronize();
    const int64_t peak = alloc::getDeviceStats(index).allocated_bytes[0].peak;
    return static_cast<double>(std::max<int64_t>(0, peak - base)) / (1024.0 * 1024.0);
  }
#else
  (void)device;
#endif
  fn();
  return -1;
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

// A task checkpoint (checkpoints/step-*): its config, its model and its step; throws
// std::runtime_error naming the directory and the problem (the optimizer state is checked too).
TaskRun load_task_checkpoint(const std::string& dir, int64_t& step) {
  TaskRun run;
  try {
    run.config = parse_task_config(read_text(fs::path(dir) / "config.toml"), {});
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error("checkpoint '" + dir + "': config.toml: " + e.what());
  }
  step = read_checkpoint_step(dir);
  run.model = model::Gpt(run.config.model);
  load_model_weights((fs::path(dir) / "model.safetensors").string(), *run.model,
                     "checkpoint '" + dir + "'");
  check_optimizer_state(dir);
  return run;
}

// train.init_from: the weights file it names (a run or checkpoint directory's
// model.safetensors, or a .safetensors file); errors name the key.
fs::path init_weights_path(const std::string& from) {
  const std::string where = "train.init_from '" + from + "'";
  const fs::path path(from);
  std::error_code ec;
  if (!fs::exists(path, ec)) throw std::invalid_argument(where + ": no such file or directory");
  const fs::path weights = fs::is_directory(path, ec) ? path / "model.safetensors" : path;
  if (!fs::is_regular_file(weights, ec)) {
    throw std::invalid_argument(where +
                                ": no model.safetensors there (a finished task run or a "
                                "checkpoint directory, or a .safetensors file)");
  }
  return weights;
}

// Loads train.init_from's weights into `model` (every name, shape and dtype checked).
void start_from_weights(const std::string& from, torch::nn::Module& model) {
  const std::string where = "train.init_from '" + from + "'";
  try {
    load_model_weights(init_weights_path(from).string(), model, where);
  } catch (const std::runtime_error& e) {
    throw std::invalid_argument(std::string(e.what()) +
                                " (the model config must match the one those weights were "
                                "trained with)");
  }
}

void set_threads(const TaskRunConfig& c) { set_cpu_threads(c.threads); }

// Each step's length and examples come from an RNG seeded by (seed, step) alone.
std::mt19937_64 step_stream(const TaskRunConfig& c, int64_t step) {
  std::seed_seq seq{c.seed, kTrainStream, static_cast<uint64_t>(step)};
  return std::mt19937_64(seq);
}

int64_t draw_step_length(const TaskRunConfig& c, std::mt19937_64& rng) {
  if (c.train_min_length <= 0) return c.train_length;
  return std::uniform_int_distribution<int64_t>(c.train_min_length, c.train_length)(rng);
}

}  // namespace

int64_t training_step_length(const TaskRunConfig& config, int64_t step) {
  auto rng = step_stream(config, step);
  return draw_step_length(config, rng);
}

TaskTrainResult train_task_model(const TaskRunConfig& c, const TaskTrainOptions& options,
                                 model::Gpt* trained) {
  if (options.resume && options.overwrite) {
    throw std::invalid_argument("--resume and --overwrite exclude each other");
  }
  set_threads(c);
  const auto task = make_task(c);
  const torch::Device device = resolve_device(c.device);
  const bool bf16 = resolve_bf16(c.precision, device);
  const fs::path dir(c.out_dir);

  if (!c.init_from.empty() && !options.resume) {
    // Checked before the run directory is touched: --overwrite must not delete the weights
    // this run is to start from.
    const auto weights = fs::weakly_canonical(init_weights_path(c.init_from));
    const auto out = fs::weakly_canonical(dir);  // also drops a trailing '/' of an existing dir
    const auto [end, _] = std::mismatch(out.begin(), out.end(), weights.begin(), weights.end());
    if (options.overwrite && end == out.end()) {
      throw std::invalid_argument("train.init_from '" + c.init_from +
                                  "' lies inside run.out_dir '" + c.out_dir +
                                  "', which --overwrite would delete first");
    }
  }
  // The run directory first: one training at a time, and never a new run over an old one.
  const auto lock = open_run_directory(c.out_dir, kTaskRunRules, options.resume, options.overwrite);
  std::string resume_dir;
  std::optional<TaskRun> resumed;
  int64_t start_step = 0;
  if (options.resume) {
    std::vector<std::string> skipped, skipped_dirs;
    resume_dir = newest_loadable_checkpoint(
        c.out_dir, [&](const std::string& d) { resumed = load_task_checkpoint(d, start_step); },
        skipped, &skipped_dirs);
    report_resume_choice(c.out_dir, kTaskRunRules, resume_dir, skipped);
    check_resume_config(to_toml(resumed->config), to_toml(c), kTaskResumeMutableKeys, resume_dir);
    remove_checkpoints_after_resume_point(kTaskRunRules, resume_dir, skipped_dirs);
  }
  write_text_atomically(dir / "config.toml", to_toml(c));

  torch::manual_seed(c.seed);
  model::Gpt net(c.model);
  if (resumed) {
    net = resumed->model;
  } else if (!c.init_from.empty()) {
    start_from_weights(c.init_from, *net);
    if (!options.quiet)
      fmt::print(stderr, "[tasks] starting from the weights of {}\n", c.init_from);
  }
  net->to(device);
  torch::optim::AdamW optimizer = make_adamw(*net, c.lr, c.weight_decay);
  if (resumed) load_optimizer_state(resume_dir, net, optimizer);
  if (!options.quiet) {
    fmt::print(stderr,
               "[tasks] {} at length {}: {} parameters, attention={} normalizer={} "
               "positions={}, {} steps of batch {}, device {}{}{}\n",
               task->name(),
               c.train_min_length > 0 ? fmt::format("{}..{}", c.train_min_length, c.train_length)
                                      : std::to_string(c.train_length),
               model::parameter_count(*net), model::to_string(c.model.attention),
               model::to_string(c.model.normalizer), model::to_string(c.model.positions), c.steps,
               c.batch, device.str(), bf16 ? " (bf16 autocast)" : "",
               resumed ? fmt::format(", resuming from step {}", start_step) : "");
  }
  std::ofstream metrics =
      open_metrics(c.out_dir, resumed ? std::optional<int64_t>(start_step) : std::nullopt);

  LoopSettings settings;
  settings.steps = c.steps;
  settings.lr = c.lr;
  settings.min_lr = c.min_lr;
  settings.warmup = c.warmup;
  settings.grad_clip = c.grad_clip;
  settings.log_every = c.log_every;
  settings.checkpoint_every = c.checkpoint_every;
  settings.profile_steps = c.profile_steps;
  settings.tokens_per_step = mean_step_tokens(*task, c);
  settings.ignore_index = data::tasks::kIgnore;
  settings.bf16 = bf16;
  settings.loss_chunk_rows = resolve_loss_chunk_rows(c.loss_chunk_rows, device, c.model.vocab_size);
  settings.quiet = options.quiet;
  settings.log_prefix = "[tasks]";
  settings.stop_after_step = options.stop_after_step;
  settings.first_loss_reference = std::log(static_cast<double>(c.model.vocab_size));

  LoopHooks hooks;
  hooks.batch = [&](int64_t step, bool pinned) {
    std::mt19937_64 rng = step_stream(c, step);
    const int64_t length = draw_step_length(c, rng);
    auto batch = std::make_shared<Batch>(make_batch(*task, length, c.batch, rng));
    StepBatch out{{}, batch->tokens, batch->targets, batch};
    if (pinned) {
      out.input = out.input.pin_memory();
      out.target = out.target.pin_memory();
    }
    return out;
  };
  hooks.logged_step = [](const StepBatch& b, const torch::Tensor& logits, nlohmann::json& line) {
    double tokens = 0;
    line["batch_accuracy"] =
        batch_accuracy(*std::static_pointer_cast<const Batch>(b.extra), logits, &tokens);
    line["batch_token_accuracy"] = tokens;
  };
  hooks.checkpoint = [&](int64_t steps_done) {
    const auto saved =
        save_training_checkpoint(c.out_dir, steps_done, *net, optimizer, to_toml(c), c.seed, {});
    remove_old_checkpoints(c.out_dir, c.keep_checkpoints);
    return saved;
  };
  hooks.metrics = [&](const nlohmann::json& line) {
    metrics << line.dump() << "\n";
    metrics.flush();
  };
  const LoopResult loop = run_loop(net, optimizer, device, start_step, settings, hooks);

  TaskTrainResult result;
  result.steps = loop.steps_done;
  result.final_loss = loop.last_loss;
  result.final_batch_accuracy = loop.last_logged.value("batch_accuracy", 0.0);
  result.seconds = loop.seconds;
  result.interrupted = loop.interrupted;
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
    const std::function<void(const LengthAccuracy&)>& progress, const BatchProgress& batch_progress,
    const TaskLogits& task_logits) {
  set_threads(c);
  const auto task = make_task(c);
  torch::NoGradGuard no_grad;
  const torch::Device device = model->parameters().front().device();
  const bool bf16 = device.is_cuda() && resolve_bf16(c.precision, device);
  model->eval();
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
      double token_sum = 0;
      for (int64_t done = 0; done < c.examples;) {
        const int64_t size = std::min(c.eval_batch, c.examples - done);
        const Batch batch = make_batch(*task, r.length, size, rng);
        torch::Tensor predictions;
        const double peak = gpu_peak_mib(device, [&] {
          const Bf16Autocast autocast(bf16);
          // The model may be on a GPU (`tasks eval --device`); accuracy is counted on the CPU.
          const auto tokens = batch.tokens.to(device);
          predictions = task_logits ? task_logits(tokens).argmax(-1)
                                    : answer_predictions(model, batch, tokens);
        });
        r.peak_gpu_mib = std::max(r.peak_gpu_mib, peak);
        double tokens = 0;
        sum += prediction_accuracy(batch, predictions, &tokens) * static_cast<double>(size);
        token_sum += tokens * static_cast<double>(size);
        done += size;
        if (batch_progress) {
          batch_progress(
              r.length, done, c.examples,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
      }
      r.examples = c.examples;
      r.accuracy = sum / static_cast<double>(c.examples);
      r.token_accuracy = token_sum / static_cast<double>(c.examples);
      r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    out.push_back(r);
    if (progress) progress(r);
  }
  model->train();
  return out;
}

}  // namespace reach::train
