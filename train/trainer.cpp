#include "train/trainer.hpp"

#include <fmt/core.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "data/corpus/corpus.hpp"
#include "eval/perplexity.hpp"
#include "model/gpt.hpp"
#include "train/checkpoint.hpp"

namespace reach::train {
namespace fs = std::filesystem;
namespace {

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int signal) { g_stop_signal = signal; }

double learning_rate(const TrainConfig& c, int64_t step) {
  if (step < c.warmup) return c.lr * static_cast<double>(step + 1) / static_cast<double>(c.warmup);
  const double progress = static_cast<double>(step - c.warmup) /
                          static_cast<double>(std::max<int64_t>(1, c.steps - c.warmup));
  return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1.0 + std::cos(M_PI * std::min(1.0, progress)));
}

// Batch for `step`: starts drawn from an RNG seeded by (seed, step) only.
std::pair<torch::Tensor, torch::Tensor> batch_for_step(std::span<const uint32_t> stream,
                                                       const TrainConfig& c, int64_t step) {
  std::seed_seq seq{static_cast<uint64_t>(c.seed), static_cast<uint64_t>(step)};
  std::mt19937_64 rng(seq);
  const auto limit = static_cast<int64_t>(stream.size()) - c.seq_len - 1;
  std::uniform_int_distribution<int64_t> start(0, limit);
  auto tokens = torch::empty({c.batch, c.seq_len + 1}, torch::kInt64);
  auto* out = tokens.data_ptr<int64_t>();
  for (int64_t b = 0; b < c.batch; ++b) {
    const int64_t s = start(rng);
    std::copy(stream.begin() + s, stream.begin() + s + c.seq_len + 1, out + b * (c.seq_len + 1));
  }
  return {tokens.narrow(1, 0, c.seq_len).contiguous(), tokens.narrow(1, 1, c.seq_len).contiguous()};
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

TokenData load_token_data(const std::string& corpus_name, const std::string& tokenizer_spec,
                          const std::string& cache_dir) {
  auto tokenizer = data::load_tokenizer(tokenizer_spec);
  const auto corpus = data::load_corpus(corpus_name);
  auto tokens = data::TokenizedCorpus::open_or_build(corpus, *tokenizer, cache_dir);
  std::vector<std::vector<int64_t>> heldout;
  for (const auto& doc : tokens.heldout()) heldout.emplace_back(doc.begin(), doc.end());
  return {std::move(tokenizer), std::move(tokens), std::move(heldout)};
}

TrainResult run_training(const TrainConfig& config_in, const TrainOptions& options) {
  TrainConfig c = config_in;
  torch::set_num_threads(c.threads > 0 ? c.threads
                                       : static_cast<int>(std::thread::hardware_concurrency()));
  const TokenData corpus = load_token_data(c.corpus, c.tokenizer, c.cache_dir);
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
  std::vector<torch::Tensor> decay, no_decay;
  for (auto& p : net->parameters()) (p.dim() >= 2 ? decay : no_decay).push_back(p);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(c.lr).weight_decay(c.weight_decay)));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(
                                    torch::optim::AdamWOptions(c.lr).weight_decay(0.0)));
  torch::optim::AdamW optimizer(std::move(groups),
                                torch::optim::AdamWOptions(c.lr).betas({0.9, 0.95}));
  if (resume_from) load_optimizer_state(*resume_from, net, optimizer);

  const fs::path metrics_path = fs::path(c.out_dir) / "metrics.jsonl";
  if (resume_from) {
    truncate_metrics(metrics_path, start_step);
  } else if (start_step == 0) {
    std::ofstream(metrics_path, std::ios::trunc);
  }
  std::ofstream metrics(metrics_path, std::ios::app);
  if (!options.quiet) {
    fmt::print(stderr, "[train] {} parameters, attention={} schedule={} W={} R={}, {} steps{}\n",
               model::parameter_count(*net), c.model.attention, c.model.schedule, c.model.window,
               c.model.reach, c.steps,
               resume_from ? fmt::format(", resuming from step {}", start_step) : "");
  }

  g_stop_signal = 0;
  auto previous_int = std::signal(SIGINT, on_stop_signal);
  auto previous_term = std::signal(SIGTERM, on_stop_signal);

  TrainResult result;
  result.steps_done = start_step;
  const auto t0 = std::chrono::steady_clock::now();
  auto heldout_loss = [&] {
    net->eval();
    auto r = eval::evaluate_lengths([&](const torch::Tensor& x) { return net(x); }, corpus.heldout,
                                    {c.seq_len}, c.eval_tokens);
    net->train();
    return r[0].mean_nll;
  };
  for (int64_t step = start_step; step < c.steps; ++step) {
    const double lr = learning_rate(c, step);
    for (auto& group : optimizer.param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    }
    auto [input, target] = batch_for_step(corpus.tokens.train_stream(), c, step);
    optimizer.zero_grad();
    auto logits = net(input);
    auto loss = torch::nn::functional::cross_entropy(logits.view({-1, c.model.vocab_size}),
                                                     target.view({-1}));
    loss.backward();
    const double grad_norm = torch::nn::utils::clip_grad_norm_(net->parameters(), c.grad_clip);
    optimizer.step();
    result.last_loss = loss.item<double>();
    result.steps_done = step + 1;
    if (!std::isfinite(result.last_loss)) {
      throw std::runtime_error(
          fmt::format("training diverged: loss is {} at step {}", result.last_loss, step + 1));
    }
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t done = step + 1 - start_step;
    result.tokens_per_second = static_cast<double>(done * c.batch * c.seq_len) / elapsed;
    nlohmann::json line{{"step", step + 1},
                        {"loss", result.last_loss},
                        {"lr", lr},
                        {"grad_norm", grad_norm},
                        {"tokens_per_s", result.tokens_per_second}};
    if ((step + 1) % c.eval_every == 0 || step + 1 == c.steps) {
      result.heldout_loss = heldout_loss();
      line["heldout_loss"] = result.heldout_loss;
    }
    metrics << line.dump() << "\n";
    metrics.flush();
    if (!options.quiet && ((step + 1) % c.log_every == 0 || step + 1 == c.steps)) {
      const double eta =
          elapsed / static_cast<double>(done) * static_cast<double>(c.steps - step - 1);
      fmt::print(
          stderr, "[train] step {}/{} loss {:.4f}{} lr {:.2e} {:.0f} tok/s ETA {}\n", step + 1,
          c.steps, result.last_loss,
          line.contains("heldout_loss") ? fmt::format(" heldout {:.4f}", result.heldout_loss) : "",
          lr, result.tokens_per_second, duration_text(eta));
    }
    if (options.stop_after_step > 0 && step + 1 == options.stop_after_step) break;
    const bool stop = g_stop_signal != 0;
    if ((step + 1) % c.checkpoint_every == 0 || step + 1 == c.steps || stop) {
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
  }
  std::signal(SIGINT, previous_int);
  std::signal(SIGTERM, previous_term);
  return result;
}

}  // namespace reach::train
