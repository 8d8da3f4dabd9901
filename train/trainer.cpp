#include "train/trainer.hpp"

#include <fmt/core.h>
#include <torch/torch.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>
#include <thread>

#include "data/corpus/corpus.hpp"
#include "eval/perplexity.hpp"
#include "model/gpt.hpp"
#include "train/checkpoint.hpp"
#include "train/device.hpp"
#include "train/optimizer.hpp"

namespace reach::train {
namespace fs = std::filesystem;
namespace {

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int signal) { g_stop_signal = signal; }

// Tokens for `step`, [batch, seq_len + 1] (inputs and targets overlap by all but one): starts
// drawn from an RNG seeded by (seed, step) only. Pinned memory lets the copy to a GPU run
// asynchronously.
torch::Tensor batch_for_step(std::span<const uint32_t> stream, const TrainConfig& c, int64_t step,
                             bool pinned) {
  std::seed_seq seq{static_cast<uint64_t>(c.seed), static_cast<uint64_t>(step)};
  std::mt19937_64 rng(seq);
  const auto limit = static_cast<int64_t>(stream.size()) - c.seq_len - 1;
  std::uniform_int_distribution<int64_t> start(0, limit);
  auto tokens = torch::empty({c.batch, c.seq_len + 1},
                             torch::TensorOptions().dtype(torch::kInt64).pinned_memory(pinned));
  auto* out = tokens.data_ptr<int64_t>();
  for (int64_t b = 0; b < c.batch; ++b) {
    const int64_t s = start(rng);
    std::copy(stream.begin() + s, stream.begin() + s + c.seq_len + 1, out + b * (c.seq_len + 1));
  }
  return tokens;
}

std::string duration_text(double seconds) {
  const auto s = static_cast<int64_t>(seconds);
  return s >= 60 ? fmt::format("{}m{:02d}s", s / 60, s % 60) : fmt::format("{}s", s);
}

// Keeps only metric lines with step <= last_step (a resumed run rewrites what came after).
void truncate_metrics(const fs::path& path, int64_t last_step) {
  std::ifstream in(path);
  if (!in) return;
  std::vector<std::string> kept;
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("step", int64_t{0}) <= last_step) kept.push_back(line);
  }
  in.close();
  std::ofstream out(path, std::ios::trunc);
  for (const auto& l : kept) out << l << "\n";
}

}  // namespace

std::string heldout_remedy(const TrainConfig& c) {
  const bool named = c.corpus == "kjv" || c.corpus == "linux";
  return fmt::format(
      "{}name longer documents in data.heldout_files, or lower data.seq_len (now {})",
      named || !c.heldout_files.empty()
          ? ""
          : fmt::format("raise data.heldout_fraction (now {}), ", c.heldout_fraction),
      c.seq_len);
}

TokenData load_token_data(const std::string& corpus_name, const data::SplitOptions& split,
                          const std::string& tokenizer_spec, const std::string& cache_dir) {
  auto tokenizer = data::load_tokenizer(tokenizer_spec);
  const auto corpus = data::load_corpus(corpus_name, split);
  auto tokens = data::TokenizedCorpus::open_or_build(corpus, *tokenizer, cache_dir);
  std::vector<std::vector<int64_t>> heldout;
  for (const auto& doc : tokens.heldout()) heldout.emplace_back(doc.begin(), doc.end());
  return {std::move(tokenizer), std::move(tokens), std::move(heldout)};
}

TrainResult run_training(const TrainConfig& config_in, const TrainOptions& options) {
  TrainConfig c = config_in;
  torch::set_num_threads(c.threads > 0 ? c.threads
                                       : static_cast<int>(std::thread::hardware_concurrency()));
  const torch::Device device = resolve_device(c.device);
  const bool bf16 = resolve_bf16(c.precision, device);
  const TokenData corpus = load_token_data(
      c.corpus, data::split_options(c.heldout_fraction, c.heldout_files), c.tokenizer, c.cache_dir);
  // Held-out evaluation runs at seq_len: fail now, not after eval_every steps.
  eval::require_heldout_length(corpus.heldout, {c.seq_len}, heldout_remedy(c));
  const int64_t vocab = corpus.tokenizer->vocab_size();
  if (c.model.vocab_size != 0 && c.model.vocab_size != vocab) {
    throw std::invalid_argument(fmt::format("model.vocab_size = {} but the tokenizer '{}' has {}",
                                            c.model.vocab_size, c.tokenizer, vocab));
  }
  c.model.vocab_size = vocab;
  if (static_cast<int64_t>(corpus.tokens.train_stream().size()) <= c.seq_len + 1) {
    throw std::invalid_argument("corpus '" + c.corpus + "' has fewer training tokens than seq_len");
  }
  fs::create_directories(c.out_dir);

  torch::manual_seed(c.seed);
  model::Gpt net(c.model);
  int64_t start_step = 0;
  std::optional<std::string> resume_from;
  if (options.resume) {
    resume_from = latest_checkpoint(c.out_dir);
    if (resume_from) {
      auto ckpt = load_checkpoint(*resume_from);
      net = ckpt.model;
      start_step = ckpt.step;
    }
  }
  // Initialised (or loaded) on the CPU, so a seed gives the same weights on every device.
  net->to(device);
  torch::optim::AdamW optimizer = make_adamw(*net, c.lr, c.weight_decay);
  if (resume_from) load_optimizer_state(*resume_from, net, optimizer);
  std::optional<FusedAdamW> fused_adamw;
  if (FusedAdamW::available(device)) fused_adamw.emplace(optimizer);

  const ModelFlops flops = training_flops_per_token(*net, c.seq_len);
  const std::string hardware = device_name(device);
  const double peak_flops =
      c.peak_tflops > 0 ? c.peak_tflops * 1e12 : peak_flops_from_name(hardware, bf16);

  const fs::path metrics_path = fs::path(c.out_dir) / "metrics.jsonl";
  if (resume_from) {
    truncate_metrics(metrics_path, start_step);
  } else if (start_step == 0) {
    std::ofstream(metrics_path, std::ios::trunc);
  }
  std::ofstream metrics(metrics_path, std::ios::app);
  if (!options.quiet) {
    fmt::print(stderr, "[train] {} parameters, attention={} schedule={} W={} R={}, {} steps{}\n",
               model::parameter_count(*net), model::to_string(c.model.attention),
               model::to_string(c.model.schedule), c.model.window, c.model.reach, c.steps,
               resume_from ? fmt::format(", resuming from step {}", start_step) : "");
    fmt::print(stderr,
               "[train] device {} ({}), {}, batch {} x seq_len {}, {:.1f} MFLOP/token (matrix "
               "products {:.1f}, attention {:.1f}), peak {}{}\n",
               device.str(), hardware, bf16 ? "bf16 autocast" : "fp32", c.batch, c.seq_len,
               flops.total() / 1e6, flops.matmul / 1e6, flops.attention / 1e6,
               peak_flops > 0 ? fmt::format("{:.0f} TFLOP/s", peak_flops / 1e12) : "unknown",
               peak_flops > 0 ? "" : " (no MFU; set train.peak_tflops)");
  }

  g_stop_signal = 0;
  auto previous_int = std::signal(SIGINT, on_stop_signal);
  auto previous_term = std::signal(SIGTERM, on_stop_signal);

  TrainResult result;
  result.steps_done = start_step;
  auto heldout_loss = [&] {
    net->eval();
    auto r = eval::evaluate_lengths(
        [&](const torch::Tensor& x) {
          const Bf16Autocast autocast(bf16);
          return net(x.to(device));
        },
        corpus.heldout, {c.seq_len}, c.eval_tokens);
    net->train();
    return r[0].mean_nll;
  };

  // On a GPU the loss and gradient norm stay on the device until a log line needs them, so the
  // CPU queues step after step without waiting for the GPU; on the CPU every step is logged as
  // it ends. Throughput is measured over the steps between two such reads (a window), after
  // synchronizing, and excludes held-out evaluation and checkpoints.
  const int64_t read_every = device.is_cuda() ? c.log_every : 1;
  struct PendingStep {
    int64_t step;
    double lr;
    torch::Tensor loss, grad_norm;
  };
  std::vector<PendingStep> pending;
  using Clock = std::chrono::steady_clock;
  auto window_start = Clock::now();
  double train_seconds = 0;
  int64_t train_steps = 0;

  // train.profile_steps: phase times of that many steps after a 5-step warm-up, synchronizing
  // the device at each phase boundary (so those steps run a little slower than the others).
  static constexpr std::array<const char*, 5> kPhases{"batch to device", "forward + loss",
                                                      "backward", "clip gradients", "optimizer"};
  std::array<double, kPhases.size()> phase_seconds{};
  const int64_t profile_from = start_step + 5;
  const int64_t profile_to = profile_from + c.profile_steps;
  auto phase_clock = Clock::now();

  for (int64_t step = start_step; step < c.steps; ++step) {
    const bool profiling = step >= profile_from && step < profile_to;
    auto phase_done = [&](size_t phase) {
      if (!profiling) return;
      synchronize(device);
      const auto now = Clock::now();
      phase_seconds[phase] += std::chrono::duration<double>(now - phase_clock).count();
      phase_clock = now;
    };
    if (profiling) {
      synchronize(device);
      phase_clock = Clock::now();
    }
    const double lr = warmup_cosine_lr(step, c.steps, c.warmup, c.lr, c.min_lr);
    for (auto& group : optimizer.param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    }
    const auto tokens = batch_for_step(corpus.tokens.train_stream(), c, step, device.is_cuda())
                            .to(device, /*non_blocking=*/true);
    const auto input = tokens.narrow(1, 0, c.seq_len).contiguous();
    const auto target = tokens.narrow(1, 1, c.seq_len).contiguous();
    phase_done(0);
    optimizer.zero_grad();
    torch::Tensor loss;
    {
      const Bf16Autocast autocast(bf16);
      auto logits = net(input);
      loss = torch::nn::functional::cross_entropy(logits.view({-1, c.model.vocab_size}),
                                                  target.view({-1}));
    }
    phase_done(1);
    loss.backward();
    phase_done(2);
    torch::Tensor grad_norm;
    if (device.is_cuda()) {
      grad_norm = clip_grad_norm_on_device(net->parameters(), c.grad_clip);
    } else {
      grad_norm = torch::tensor(torch::nn::utils::clip_grad_norm_(net->parameters(), c.grad_clip),
                                torch::kFloat64);
    }
    phase_done(3);
    if (fused_adamw) {
      fused_adamw->step();
    } else {
      optimizer.step();
    }
    phase_done(4);
    pending.push_back({step + 1, lr, loss.detach(), grad_norm.detach()});
    result.steps_done = step + 1;
    if (profiling && step + 1 == profile_to && !options.quiet) {
      const double total = std::accumulate(phase_seconds.begin(), phase_seconds.end(), 0.0);
      const auto profiled = static_cast<double>(c.profile_steps);
      fmt::print(stderr, "[train] profile of {} steps (device synchronized between phases):\n",
                 c.profile_steps);
      for (size_t i = 0; i < kPhases.size(); ++i) {
        fmt::print(stderr, "[train]   {:<16} {:8.2f} ms/step {:5.1f}%\n", kPhases[i],
                   1e3 * phase_seconds[i] / profiled, 100 * phase_seconds[i] / total);
      }
      fmt::print(stderr, "[train]   {:<16} {:8.2f} ms/step = {:.0f} tok/s\n", "total",
                 1e3 * total / profiled,
                 static_cast<double>(c.batch * c.seq_len) * profiled / total);
    }

    const bool last = step + 1 == c.steps;
    const bool log_now = (step + 1) % c.log_every == 0 || last;
    const bool eval_now = (step + 1) % c.eval_every == 0 || last;
    const bool stop_after = options.stop_after_step > 0 && step + 1 == options.stop_after_step;
    const bool stop = g_stop_signal != 0;
    const bool checkpoint_now =
        !stop_after && ((step + 1) % c.checkpoint_every == 0 || last || stop);
    if (static_cast<int64_t>(pending.size()) < read_every && !log_now && !eval_now &&
        !checkpoint_now && !stop_after) {
      continue;
    }

    // Read the window's losses (one synchronization), then evaluate and checkpoint untimed.
    synchronize(device);
    const double window_seconds =
        std::chrono::duration<double>(Clock::now() - window_start).count();
    const auto window_steps = static_cast<int64_t>(pending.size());
    train_seconds += window_seconds;
    train_steps += window_steps;
    const double tokens_per_second =
        static_cast<double>(window_steps * c.batch * c.seq_len) / window_seconds;
    const double mfu = peak_flops > 0 ? flops.total() * tokens_per_second / peak_flops : 0;
    std::vector<nlohmann::json> lines;
    for (const auto& p : pending) {
      result.last_loss = p.loss.item<double>();
      if (!std::isfinite(result.last_loss)) {
        throw std::runtime_error(
            fmt::format("training diverged: loss is {} at step {}", result.last_loss, p.step));
      }
      nlohmann::json line{{"step", p.step},
                          {"loss", result.last_loss},
                          {"lr", p.lr},
                          {"grad_norm", p.grad_norm.item<double>()},
                          {"tokens_per_s", tokens_per_second},
                          {"step_ms", 1e3 * window_seconds / static_cast<double>(window_steps)}};
      if (peak_flops > 0) line["mfu"] = mfu;
      lines.push_back(std::move(line));
    }
    pending.clear();
    result.tokens_per_second =
        static_cast<double>(train_steps * c.batch * c.seq_len) / train_seconds;
    if (eval_now) {
      result.heldout_loss = heldout_loss();
      lines.back()["heldout_loss"] = result.heldout_loss;
    }
    for (const auto& line : lines) metrics << line.dump() << "\n";
    metrics.flush();
    if (!options.quiet && log_now) {
      const double eta = train_seconds / static_cast<double>(train_steps) *
                         static_cast<double>(c.steps - step - 1);
      fmt::print(stderr, "[train] step {}/{} loss {:.4f}{} lr {:.2e} {:.0f} tok/s{} ETA {}\n",
                 step + 1, c.steps, result.last_loss,
                 eval_now ? fmt::format(" heldout {:.4f}", result.heldout_loss) : "", lr,
                 tokens_per_second, peak_flops > 0 ? fmt::format(" MFU {:.1f}%", 100 * mfu) : "",
                 duration_text(eta));
    }
    if (stop_after) break;
    if (checkpoint_now) {
      save_checkpoint(c.out_dir, step + 1, net, optimizer, c, *corpus.tokenizer);
      result.checkpoint = *latest_checkpoint(c.out_dir);
    }
    if (stop) {
      result.interrupted = true;
      if (!options.quiet) {
        fmt::print(stderr, "[train] stopped by signal {} after step {}; checkpoint {}\n",
                   g_stop_signal.load(), step + 1, result.checkpoint);
      }
      break;
    }
    window_start = Clock::now();
  }
  std::signal(SIGINT, previous_int);
  std::signal(SIGTERM, previous_term);
  return result;
}

}  // namespace reach::train
