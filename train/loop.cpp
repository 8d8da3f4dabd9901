#include "train/loop.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <numeric>
#include <set>
#include <vector>

#include "train/captured_step.hpp"
#include "train/device.hpp"
#include "train/optimizer.hpp"

namespace reach::train {
namespace {

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int signal) { g_stop_signal = signal; }

// Restores the previous SIGINT/SIGTERM handlers however the loop ends (an exception included).
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    previous_int_ = std::signal(SIGINT, on_stop_signal);
    previous_term_ = std::signal(SIGTERM, on_stop_signal);
  }
  ~StopSignals() {
    std::signal(SIGINT, previous_int_);
    std::signal(SIGTERM, previous_term_);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  void (*previous_int_)(int) = nullptr;
  void (*previous_term_)(int) = nullptr;
};

std::string duration_text(double seconds) {
  const auto s = static_cast<int64_t>(seconds);
  return s >= 60 ? fmt::format("{}m{:02d}s", s / 60, s % 60) : fmt::format("{}s", s);
}

double median(std::vector<double> values) {
  const auto mid = values.begin() + static_cast<std::ptrdiff_t>(values.size() / 2);
  std::nth_element(values.begin(), mid, values.end());
  if (values.size() % 2 == 1) return *mid;
  return (*mid + *std::max_element(values.begin(), mid)) / 2;
}

// Fields every metrics line has; any other field came from the logged_step hook.
const std::set<std::string> kStandardFields{"step",         "loss",    "lr",  "grad_norm",
                                            "tokens_per_s", "step_ms", "mfu", "heldout_loss"};

}  // namespace

std::optional<std::string> SpikeCheck::check(double loss) {
  if (!std::isfinite(loss)) return fmt::format("loss is {}", loss);
  std::optional<std::string> why;
  if (recent_.empty()) {
    if (uniform_loss_ > 0 && loss > kSpikeFactor * uniform_loss_) {
      why = fmt::format("loss {:.4g} is more than {}x ln(vocab) = {:.4g}", loss, kSpikeFactor,
                        uniform_loss_);
    }
  } else {
    const double reference = median({recent_.begin(), recent_.end()});
    if (loss > kSpikeFactor * reference && loss > uniform_loss_) {
      why = fmt::format(
          "loss {:.4g} is more than {}x the median {:.4g} of the previous {} steps and worse "
          "than a uniform guess, ln(vocab) = {:.4g} (a loss spike)",
          loss, kSpikeFactor, reference, recent_.size(), uniform_loss_);
    }
  }
  recent_.push_back(loss);
  if (recent_.size() > kSpikeWindow) recent_.pop_front();
  return why;
}

double StepTimeSmoother::add(double seconds, int64_t steps) {
  const double per_step = seconds / static_cast<double>(std::max<int64_t>(1, steps));
  average_ = kSmoothing * average_ + (1 - kSmoothing) * per_step;
  weight_ = kSmoothing * weight_ + (1 - kSmoothing);
  return seconds_per_step();
}

double StepTimeSmoother::seconds_per_step() const { return weight_ > 0 ? average_ / weight_ : 0; }

void keep_metrics_through(const std::string& path, int64_t last_step) {
  std::ifstream in(path);
  if (!in) return;
  std::vector<std::string> kept;
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("step", int64_t{0}) <= last_step) kept.push_back(line);
  }
  in.close();
  // Rewritten beside and renamed over, so that a kill here loses no line.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (const auto& l : kept) out << l << "\n";
    if (!out.flush()) throw std::runtime_error("cannot write '" + tmp + "'");
  }
  std::filesystem::rename(tmp, path);
}

bool weights_are_finite(model::GptImpl& net) {
  torch::NoGradGuard no_grad;
  for (const auto& p : net.parameters()) {
    if (!torch::isfinite(p).all().item<bool>()) return false;
  }
  return true;
}

LoopResult run_loop(model::Gpt& net, torch::optim::AdamW& optimizer, const torch::Device& device,
                    int64_t start_step, const LoopSettings& s, const LoopHooks& hooks) {
  std::optional<FusedAdamW> fused_adamw;
  if (FusedAdamW::available(device)) fused_adamw.emplace(optimizer);
  const StopSignals signals;
  LoopResult result;
  result.steps_done = start_step;
  const auto diverged = [&](int64_t step, const std::string& why) {
    return std::runtime_error(fmt::format(
        "training diverged at step {}: {}; stopped{}", step, why,
        result.checkpoint.empty() ? std::string(" (no checkpoint written by this run)")
                                  : "; the last good checkpoint is " + result.checkpoint));
  };

  // On a GPU the loss and gradient norm stay on the device until a log line needs them, so the
  // CPU queues step after step without waiting for the GPU; on the CPU every step is read as
  // it ends. Throughput is measured over the steps between two such reads (a window), after
  // synchronizing, and excludes held-out evaluation and checkpoints.
  const int64_t read_every = device.is_cuda() ? s.log_every : 1;
  struct PendingStep {
    int64_t step;
    double lr;
    torch::Tensor loss, grad_norm;
    nlohmann::json extra;
  };
  std::vector<PendingStep> pending;
  SpikeCheck spikes(s.first_loss_reference);
  StepTimeSmoother smoother;
  using Clock = std::chrono::steady_clock;
  const auto loop_start = Clock::now();
  auto window_start = Clock::now();
  double train_seconds = 0;
  int64_t train_steps = 0;

  // profile_steps: phase times of that many steps after a 5-step warm-up, synchronizing the
  // device at each phase boundary (so those steps run a little slower than the others).
  static constexpr std::array<const char*, 5> kPhases{"batch to device", "forward + loss",
                                                      "backward", "clip gradients", "optimizer"};
  std::array<double, kPhases.size()> phase_seconds{};
  const int64_t profile_from = start_step + 5;
  const int64_t profile_to = profile_from + s.profile_steps;
  auto phase_clock = Clock::now();

  // One step from a device batch: forward + loss (under bf16 autocast), backward, gradient
  // clipping, the optimizer; at the param groups' learning rate, or at *device_lr (one float32
  // on the device) for a step captured in a CUDA graph. phase_done(i) ends phase i of kPhases.
  const auto train_step = [&](const DeviceBatch& b, const torch::Tensor* device_lr,
                              bool keep_logits, torch::Tensor& logged_logits,
                              const std::function<void(size_t)>& phase_done) {
    torch::Tensor input = b.input, target = b.target;
    if (b.sequence.defined()) {
      const int64_t length = b.sequence.size(1) - 1;
      input = b.sequence.narrow(1, 0, length).contiguous();
      target = b.sequence.narrow(1, 1, length).contiguous();
    }
    optimizer.zero_grad();
    torch::Tensor loss;
    {
      const Bf16Autocast autocast(s.bf16);
      if (s.loss_chunk_rows == 0) {
        auto logits = net(input);
        loss = torch::nn::functional::cross_entropy(
            logits.view({-1, logits.size(-1)}), target.view({-1}),
            torch::nn::functional::CrossEntropyFuncOptions().ignore_index(s.ignore_index));
        if (keep_logits) logged_logits = logits.detach();
      } else {
        // The head and loss in chunks; a logged step that needs the logits computes them apart.
        const auto hidden = net->hidden_states(input);
        loss = net->loss_of_hidden(hidden, target, s.ignore_index, s.loss_chunk_rows);
        if (keep_logits) {
          const torch::NoGradGuard no_grad;
          logged_logits = net->head(hidden.detach());
        }
      }
    }
    phase_done(1);
    loss.backward();
    if (hooks.reduce_gradients) hooks.reduce_gradients();
    phase_done(2);
    torch::Tensor grad_norm;
    if (device.is_cuda()) {
      grad_norm = clip_grad_norm_on_device(net->parameters(), s.grad_clip);
    } else {
      grad_norm = torch::tensor(torch::nn::utils::clip_grad_norm_(net->parameters(), s.grad_clip),
                                torch::kFloat64);
    }
    phase_done(3);
    if (device_lr != nullptr) {
      fused_adamw->step(*device_lr);
    } else if (fused_adamw) {
      fused_adamw->step();
    } else {
      optimizer.step();
    }
    phase_done(4);
    return StepOutputs{loss.detach(), grad_norm.detach()};
  };

  // On a GPU, the step captured in a CUDA graph (train/captured_step.hpp) when the settings ask
  // for it and nothing in the step or the hooks needs the host inside it.
  std::unique_ptr<CapturedTrainStep> captured;
  // Profiled steps synchronize between phases, so they run eagerly, before the graph's first.
  const int64_t graph_from = s.profile_steps > 0 ? profile_to : start_step;
  if (s.cuda_graph && device.is_cuda()) {
    std::string why = CapturedTrainStep::problem(net);
    if (why.empty() && !fused_adamw) why = "the fused AdamW kernel is not available";
    if (why.empty() && hooks.logged_step) why = "logged steps read the logits (a task run)";
    if (why.empty() && (hooks.reduce_gradients || hooks.average_loss)) {
      why = "data-parallel ranks reduce gradients between backward and the optimizer";
    }
    if (why.empty()) {
      captured = std::make_unique<CapturedTrainStep>(
          [&](const DeviceBatch& b, const torch::Tensor& lr) {
            torch::Tensor unused;
            return train_step(b, &lr, false, unused, [](size_t) {});
          },
          device);
      if (!s.quiet) {
        fmt::print(stderr,
                   "{} CUDA graph: the training step is captured at step {} and replayed for "
                   "every step after it{}\n",
                   s.log_prefix, graph_from + 2,
                   s.profile_steps > 0 ? ", after the eagerly profiled steps" : "");
      }
    } else if (!s.quiet) {
      fmt::print(stderr, "{} CUDA graph not used: {}\n", s.log_prefix, why);
    }
  }

  for (int64_t step = start_step; step < s.steps; ++step) {
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
    const double lr = warmup_cosine_lr(step, s.steps, s.warmup, s.lr, s.min_lr);
    for (auto& group : optimizer.param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    }
    const StepBatch batch = hooks.batch(step, device.is_cuda());
    const bool last = step + 1 == s.steps;
    const bool log_now = (step + 1) % s.log_every == 0 || last;
    torch::Tensor loss, grad_norm, logged_logits;
    if (captured && step >= graph_from &&
        captured->accepts(batch.sequence, batch.input, batch.target)) {
      try {
        auto out = captured->run(batch.sequence, batch.input, batch.target, lr);
        fused_adamw->count_host_step();
        loss = std::move(out.loss);
        grad_norm = std::move(out.grad_norm);
      } catch (const std::runtime_error& e) {
        if (!s.quiet) fmt::print(stderr, "{} {}; training on eagerly\n", s.log_prefix, e.what());
        captured.reset();
        synchronize(device);
      }
    }
    if (!loss.defined()) {
      DeviceBatch on_device;
      const auto to_device = [&](const torch::Tensor& t) {
        return t.defined() ? t.to(device, /*non_blocking=*/true) : torch::Tensor();
      };
      on_device = {to_device(batch.sequence), to_device(batch.input), to_device(batch.target)};
      phase_done(0);
      auto out =
          train_step(on_device, nullptr, log_now && hooks.logged_step, logged_logits, phase_done);
      loss = std::move(out.loss);
      grad_norm = std::move(out.grad_norm);
    }

    nlohmann::json extra = nlohmann::json::object();
    if (logged_logits.defined()) hooks.logged_step(batch, logged_logits, extra);
    logged_logits = torch::Tensor();
    pending.push_back({step + 1, lr,
                       hooks.average_loss ? hooks.average_loss(loss.detach()) : loss.detach(),
                       grad_norm.detach(), std::move(extra)});
    result.steps_done = step + 1;
    if (profiling && step + 1 == profile_to && !s.quiet) {
      const double total = std::accumulate(phase_seconds.begin(), phase_seconds.end(), 0.0);
      const auto profiled = static_cast<double>(s.profile_steps);
      fmt::print(stderr, "{} profile of {} steps (device synchronized between phases):\n",
                 s.log_prefix, s.profile_steps);
      for (size_t i = 0; i < kPhases.size(); ++i) {
        fmt::print(stderr, "{}   {:<16} {:8.2f} ms/step {:5.1f}%\n", s.log_prefix, kPhases[i],
                   1e3 * phase_seconds[i] / profiled, 100 * phase_seconds[i] / total);
      }
      fmt::print(stderr, "{}   {:<16} {:8.2f} ms/step = {:.0f} tok/s\n", s.log_prefix, "total",
                 1e3 * total / profiled, static_cast<double>(s.tokens_per_step) * profiled / total);
    }

    const bool eval_now =
        hooks.evaluate && ((s.eval_every > 0 && (step + 1) % s.eval_every == 0) || last);
    const bool stop_after = s.stop_after_step > 0 && step + 1 == s.stop_after_step;
    const bool scheduled_checkpoint =
        hooks.checkpoint && !stop_after &&
        ((s.checkpoint_every > 0 && (step + 1) % s.checkpoint_every == 0) || last);
    bool stop = g_stop_signal != 0;
    if (hooks.any_rank) {
      // Ranks stop together, at a step where all of them synchronize.
      const bool synchronizing = static_cast<int64_t>(pending.size()) >= read_every || log_now ||
                                 eval_now || scheduled_checkpoint || stop_after;
      stop = synchronizing && hooks.any_rank(stop);
    }
    const bool checkpoint_now = scheduled_checkpoint || (hooks.checkpoint && !stop_after && stop);
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
        static_cast<double>(window_steps * s.tokens_per_step) / window_seconds;
    const double mfu = s.peak_flops > 0 ? s.flops_per_token * tokens_per_second / s.peak_flops : 0;
    const double smoothed_step_seconds = smoother.add(window_seconds, window_steps);
    std::vector<nlohmann::json> lines;
    for (auto& p : pending) {
      result.last_loss = p.loss.item<double>();
      if (auto why = spikes.check(result.last_loss)) throw diverged(p.step, *why);
      const double norm = p.grad_norm.item<double>();
      if (!std::isfinite(norm)) throw diverged(p.step, fmt::format("gradient norm is {}", norm));
      nlohmann::json line{{"step", p.step},
                          {"loss", result.last_loss},
                          {"lr", p.lr},
                          {"grad_norm", norm},
                          {"tokens_per_s", tokens_per_second},
                          {"step_ms", 1e3 * window_seconds / static_cast<double>(window_steps)}};
      if (s.peak_flops > 0) line["mfu"] = mfu;
      for (const auto& field : p.extra.items()) line[field.key()] = field.value();
      lines.push_back(std::move(line));
    }
    pending.clear();
    result.tokens_per_second = static_cast<double>(train_steps * s.tokens_per_step) / train_seconds;
    if (eval_now) {
      result.heldout_loss = hooks.evaluate();
      if (!std::isfinite(result.heldout_loss)) {
        throw diverged(step + 1, fmt::format("held-out loss is {}", result.heldout_loss));
      }
      lines.back()["heldout_loss"] = result.heldout_loss;
    }
    if (hooks.metrics) {
      for (const auto& line : lines) hooks.metrics(line);
    }
    result.last_logged = lines.back();
    if (!s.quiet && log_now) {
      const double eta = smoothed_step_seconds * static_cast<double>(s.steps - step - 1);
      std::string extras;
      for (const auto& field : lines.back().items()) {
        if (kStandardFields.contains(field.key()) || !field.value().is_number()) continue;
        std::string name = field.key();
        std::replace(name.begin(), name.end(), '_', ' ');
        extras += fmt::format(" {} {:.3f}", name, field.value().get<double>());
      }
      fmt::print(stderr, "{} step {}/{} loss {:.4f}{}{} lr {:.2e} {:.0f} tok/s{} ETA {}\n",
                 s.log_prefix, step + 1, s.steps, result.last_loss,
                 eval_now ? fmt::format(" heldout {:.4f}", result.heldout_loss) : "", extras, lr,
                 static_cast<double>(s.tokens_per_step) / smoothed_step_seconds,
                 s.peak_flops > 0 ? fmt::format(" MFU {:.1f}%", 100 * mfu) : "",
                 duration_text(eta));
    }
    if (stop_after) break;
    if (checkpoint_now) {
      if (!weights_are_finite(*net)) throw diverged(step + 1, "a weight is not finite");
      result.checkpoint = hooks.checkpoint(step + 1);
    }
    if (stop) {
      result.interrupted = true;
      if (!s.quiet) {
        const int signal = g_stop_signal.load();
        fmt::print(stderr, "{} stopped by {} after step {}; checkpoint {}\n", s.log_prefix,
                   signal != 0 ? fmt::format("signal {}", signal) : "a signal to another rank",
                   step + 1, result.checkpoint);
      }
      break;
    }
    window_start = Clock::now();
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - loop_start).count();
  return result;
}

}  // namespace reach::train
