// One training step of a model preset (default: the paper preset) on the GPU, timed and profiled
// kernel by kernel (issue 15): forward + cross-entropy + backward under bf16 autocast, gradient
// clipping and a fused AdamW step, on random tokens of the vocabulary size asked for. Prints the
// step time (median of timed steps between device synchronizations) and, with --trace FILE, records
// --profile-steps steps with LibTorch's Kineto profiler into a Chrome trace
// (scripts/profile_summary.py turns it into the per-kernel table of docs/benchmarks.md: GPU busy
// time per kernel name and the idle time between kernels, i.e. what launch overhead costs).
//
// Usage (GPU machine): build-gpu/bench/train_step_profile [--attention fibonacci|dense]
//   [--preset paper|paper-exact|...] [--vocab 256] [--seq-len 1024] [--batch 64] [--steps 20]
//   [--profile-steps 3] [--trace FILE] [--loss-chunk-rows 0]
//   [--normalizer softmax|entmax|asentmax|ssmax] [--positions rope|nape|...]
// --loss-chunk-rows > 0 computes the head and the loss in chunks of that many rows
// (ops/linear_cross_entropy.hpp, as train.loss_chunk_rows); 0 (default) through the full logits.
// (--preset paper-exact --vocab 32768: the paper's own 60.9M-parameter model, GQA, RMSNorm,
// SwiGLU, its 32k vocabulary, as configs/experiments/paper-central.toml trains it.)
#include <ATen/autocast_mode.h>
#include <fmt/core.h>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/gpt.hpp"
#include "model/model_config.hpp"

namespace {

struct Options {
  std::string attention = "fibonacci";
  std::string preset = "paper";
  std::string normalizer, positions;  // empty: the preset's
  int64_t vocab = 256;
  int64_t loss_chunk_rows = 0;
  int64_t seq_len = 1024, batch = 64, steps = 20, profile_steps = 3;
  std::string trace;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument("flag " + flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--attention") {
      o.attention = value;
    } else if (flag == "--normalizer") {
      o.normalizer = value;
    } else if (flag == "--positions") {
      o.positions = value;
    } else if (flag == "--preset") {
      o.preset = value;
    } else if (flag == "--vocab") {
      o.vocab = std::stoll(value);
    } else if (flag == "--loss-chunk-rows") {
      o.loss_chunk_rows = std::stoll(value);
    } else if (flag == "--seq-len") {
      o.seq_len = std::stoll(value);
    } else if (flag == "--batch") {
      o.batch = std::stoll(value);
    } else if (flag == "--steps") {
      o.steps = std::stoll(value);
    } else if (flag == "--profile-steps") {
      o.profile_steps = std::stoll(value);
    } else if (flag == "--trace") {
      o.trace = value;
    } else {
      throw std::invalid_argument("unknown flag " + flag);
    }
  }
  if (o.seq_len < 1 || o.batch < 1 || o.steps < 1 || o.profile_steps < 0 || o.vocab < 2 ||
      o.loss_chunk_rows < 0) {
    throw std::invalid_argument(
        "--seq-len, --batch, --steps must be >= 1, --vocab >= 2, --profile-steps and "
        "--loss-chunk-rows >= 0");
  }
  return o;
}

// bf16 autocast on CUDA for one scope (as train/device.hpp's Bf16Autocast, LibTorch >= 2.4).
struct Autocast {
  Autocast() {
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::increment_nesting();
  }
  ~Autocast() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(at::kCUDA, false);
  }
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;
};

}  // namespace

int main(int argc, char** argv) try {
  const auto o = parse(argc, argv);
  if (!torch::cuda::is_available()) throw std::runtime_error("needs a CUDA device");
  const torch::Device device(torch::kCUDA, 0);
  auto config = reach::model::preset(o.preset);
  config.vocab_size = o.vocab;
  config.attention = reach::model::parse_attention_family(o.attention);
  config.schedule = reach::model::AlphaSchedule::stagger;
  if (!o.normalizer.empty()) config.normalizer = reach::model::parse_normalizer(o.normalizer);
  if (!o.positions.empty()) config.positions = reach::model::parse_positions(o.positions);
  if (o.preset == "paper") {  // reach's own convention: alpha 1 -> 3 (the paper's: 0.5 + l/(L-1))
    config.alpha_min = 1.0;
    config.alpha_max = 3.0;
  }
  config.reach = std::max(o.seq_len, config.window);
  torch::manual_seed(0);
  reach::model::Gpt net(config);
  net->to(device);
  std::vector<torch::Tensor> params = net->parameters();
  std::vector<torch::Tensor> exp_avg, exp_avg_sq, steps;
  for (const auto& p : params) {
    exp_avg.push_back(torch::zeros_like(p));
    exp_avg_sq.push_back(torch::zeros_like(p));
    steps.push_back(torch::zeros({}, p.options()));
  }
  const auto tokens = torch::randint(0, config.vocab_size, {o.batch, o.seq_len + 1},
                                     torch::TensorOptions().dtype(torch::kLong).device(device));
  const auto input = tokens.narrow(1, 0, o.seq_len).contiguous();
  const auto target = tokens.narrow(1, 1, o.seq_len).contiguous().view({-1});

  auto step = [&] {
    for (auto& p : params) p.mutable_grad() = torch::Tensor();
    torch::Tensor loss;
    {
      const Autocast autocast;
      // (loss_chunk_rows 0: net(input) and cross_entropy over the full logits, as before.)
      loss = net->loss(input, target, -100, o.loss_chunk_rows);
    }
    loss.backward();
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> grads;
    for (const auto& p : params) grads.push_back(p.grad());
    const auto norm = torch::stack(at::_foreach_norm(grads, 2)).norm();
    at::_foreach_mul_(grads, (1.0 / (norm + 1e-6)).clamp_max(1.0));
    at::_foreach_add_(steps, 1.0);
    at::_fused_adamw_(params, grads, exp_avg, exp_avg_sq, {}, steps, 6e-4, 0.9, 0.95, 0.1, 1e-8,
                      false, false);
    return loss.detach();
  };

  using Clock = std::chrono::steady_clock;
  for (int i = 0; i < 5; ++i) step();  // allocator, cuBLAS handles, autotuning
  torch::cuda::synchronize();
  std::vector<double> ms;
  torch::Tensor loss;
  for (int64_t i = 0; i < o.steps; ++i) {
    const auto start = Clock::now();
    loss = step();
    torch::cuda::synchronize();
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  fmt::print(
      "train_step_profile {} {} vocab {} {} x {}, loss chunk rows {}: step {:.2f} ms (median of "
      "{}; min {:.2f}), {:.0f} tokens/s, loss {:.4f}\n",
      o.preset, o.attention, o.vocab, o.batch, o.seq_len, o.loss_chunk_rows, median, ms.size(),
      ms.front(), 1e3 * static_cast<double>(o.batch * o.seq_len) / median, loss.item<double>());

  if (!o.trace.empty() && o.profile_steps > 0) {
    namespace prof = torch::autograd::profiler;
    namespace impl = torch::profiler::impl;
    // Input shapes recorded: scripts/profile_summary.py prints those of the op behind each kernel.
    const impl::ProfilerConfig profiler_config(impl::ProfilerState::KINETO,
                                               /*report_input_shapes=*/true);
    const std::set<impl::ActivityType> activities{impl::ActivityType::CPU,
                                                  impl::ActivityType::CUDA};
    prof::prepareProfiler(profiler_config, activities);
    prof::enableProfiler(profiler_config, activities);
    for (int64_t i = 0; i < o.profile_steps; ++i) step();
    torch::cuda::synchronize();
    auto result = prof::disableProfiler();
    result->save(o.trace);
    fmt::print("train_step_profile: {} steps traced into {}\n", o.profile_steps, o.trace);
  }
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "train_step_profile: {}\n", e.what());
  return 1;
}
