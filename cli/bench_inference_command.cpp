// `reach bench inference MATRIX.toml --only A,B`: the forward (inference) speed of several of a
// matrix's models side by side in one process, on one device, interleaved in rounds (A, B, A,
// B, ...), so the ratio between two schedules is not the ratio between two moments of a shared
// or warming GPU (the per-run figure `reach experiment` records is timed in each run's own
// process). A learned schedule is also timed frozen to integer offsets, as it runs after
// `reach generate` / KV-cache decode freezes it. Models are randomly initialised from each
// run's config: speed depends on the shapes and the schedule, not on trained weights (a learned
// schedule's offsets are its initial ones; training moves them by a few positions).
#include <fmt/core.h>
#include <torch/torch.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>

#include "cli/commands.hpp"
#include "cli/validators.hpp"
#include "experiment/experiment_runner.hpp"
#include "experiment/inference_speed.hpp"
#include "model/gpt.hpp"
#include "train/device.hpp"

namespace reach::cli {
namespace {

struct InferenceBenchOptions {
  std::string matrix;
  std::vector<std::string> only;
  std::vector<std::string> overrides;
  std::string device;  // empty: each run's train.device
  int64_t batch = 0;   // 0: the config's train.batch
  int64_t seq_len = 0;
  int64_t vocab = 0;  // 0: the config's model.vocab_size, or 256 for the byte tokenizer
  int rounds = 5;
  double seconds_per_round = 0.5;
  std::string json;
};

struct Timed {
  std::string name;
  bool frozen = false;
  model::Gpt model{nullptr};
  std::vector<double> tokens_per_s;  // one per round
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void run(const InferenceBenchOptions& o) {
  auto spec =
      experiment::select_runs(experiment::load_experiment(o.matrix, o.overrides), o.only, {});
  // In the order --only names them (select_runs keeps the matrix's): the first is the reference.
  std::stable_sort(spec.runs.begin(), spec.runs.end(), [&](const auto& a, const auto& b) {
    return std::find(o.only.begin(), o.only.end(), a.name) <
           std::find(o.only.begin(), o.only.end(), b.name);
  });
  if (spec.runs.empty()) throw std::invalid_argument("bench inference: the matrix has no runs");
  std::optional<torch::Device> device;
  bool bf16 = false;
  int64_t batch = 0, seq_len = 0, vocab = 0;
  std::vector<Timed> models;
  for (const auto& run : spec.runs) {
    const auto config = experiment::run_config(
        run, experiment::run_directory(spec, run, run.seeds.front()), run.seeds.front());
    const auto here = train::resolve_device(o.device.empty() ? config.device : o.device);
    const int64_t b = o.batch > 0 ? o.batch : config.batch;
    const int64_t t = o.seq_len > 0 ? o.seq_len : config.seq_len;
    int64_t v = o.vocab > 0 ? o.vocab : config.model.vocab_size;
    if (v == 0 && config.tokenizer == "byte") v = 256;
    if (v == 0) {
      throw std::invalid_argument(fmt::format(
          "bench inference: run '{}' takes its vocabulary from the tokenizer '{}': give --vocab "
          "(the paper's: 32768)",
          run.name, config.tokenizer));
    }
    const bool here_bf16 = train::resolve_bf16(config.precision, here);
    if (device &&
        (*device != here || bf16 != here_bf16 || b != batch || t != seq_len || v != vocab)) {
      throw std::invalid_argument(fmt::format(
          "bench inference: run '{}' differs from '{}' in device, precision, batch, seq_len or "
          "vocabulary; side-by-side timing needs the same (use --device/--batch/--seq-len/--vocab)",
          run.name, models.front().name));
    }
    device = here, bf16 = here_bf16, batch = b, seq_len = t, vocab = v;
    auto model_config = config.model;
    model_config.vocab_size = v;
    torch::manual_seed(config.seed);
    model::Gpt model(model_config);
    model->to(here);
    model->eval();
    models.push_back({run.name, false, model, {}});
    if (model::is_dilated(model_config.attention) &&
        model_config.schedule == pattern::AlphaSchedule::learned) {
      torch::manual_seed(config.seed);
      model::Gpt frozen(model_config);
      frozen->to(here);
      frozen->eval();
      frozen->freeze_schedules();
      models.push_back({run.name + " (frozen)", true, frozen, {}});
    }
  }
  fmt::print(
      stderr, "[bench inference] {} models, batch {} x {} tokens, vocabulary {}, {}{}, {} rounds\n",
      models.size(), batch, seq_len, vocab, device->str(), bf16 ? " bf16" : " float32", o.rounds);
  torch::NoGradGuard no_grad;
  for (int round = 0; round < o.rounds; ++round) {
    for (auto& m : models) {
      m.tokens_per_s.push_back(experiment::inference_tokens_per_s(
          m.model, *device, bf16, batch, seq_len, vocab, o.seconds_per_round));
    }
    fmt::print(stderr, "[bench inference] round {}/{} done\n", round + 1, o.rounds);
  }
  const double first = median(models.front().tokens_per_s);
  fmt::print("| model | tokens/s (median of {} rounds) | min | max | time vs {} |\n", o.rounds,
             models.front().name);
  fmt::print("|---|---:|---:|---:|---:|\n");
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& m : models) {
    const double med = median(m.tokens_per_s);
    const auto [lo, hi] = std::minmax_element(m.tokens_per_s.begin(), m.tokens_per_s.end());
    fmt::print("| {} | {:.0f} | {:.0f} | {:.0f} | {:.3f}x |\n", m.name, med, *lo, *hi, first / med);
    rows.push_back({{"model", m.name},
                    {"frozen", m.frozen},
                    {"tokens_per_s", m.tokens_per_s},
                    {"median_tokens_per_s", med},
                    {"time_ratio_vs_first", first / med}});
  }
  if (!o.json.empty()) {
    std::ofstream out(o.json, std::ios::trunc);
    out << nlohmann::json{{"batch", batch},          {"seq_len", seq_len}, {"vocab", vocab},
                          {"device", device->str()}, {"bf16", bf16},       {"rounds", o.rounds},
                          {"models", rows}}
               .dump(1)
        << "\n";
    if (!out) throw std::runtime_error("bench inference: cannot write " + o.json);
  }
}

}  // namespace

void add_bench_inference_command(CLI::App& app) {
  auto* group = app.get_subcommand("bench");
  auto o = std::make_shared<InferenceBenchOptions>();
  auto* cmd = group->add_subcommand(
      "inference",
      "Time the forward pass of several runs of an experiment matrix side by side (one "
      "process, interleaved rounds; a learned schedule also frozen): the latency ratio between "
      "schedules. Models are randomly initialised from each run's config");
  cmd->add_option("matrix", o->matrix, "The matrix file (TOML), as for `reach experiment`")
      ->required();
  cmd->add_option("--only", o->only,
                  "These runs (comma separated; default: all), the first "
                  "is the reference of the ratio column")
      ->delimiter(',');
  cmd->add_option("--set", o->overrides, "Config override for every run, e.g. data.batch=8");
  cmd->add_option("--device", o->device, "cpu, cuda, cuda:N (default: each run's train.device)");
  cmd->add_option("--batch", o->batch, "Sequences per forward (default: data.batch)")
      ->check(positive());
  cmd->add_option("--seq-len", o->seq_len, "Tokens per sequence (default: data.seq_len)")
      ->check(positive());
  cmd->add_option("--vocab", o->vocab,
                  "Vocabulary size, for runs whose tokenizer sets it (default: model.vocab_size, "
                  "256 for the byte tokenizer)")
      ->check(positive());
  cmd->add_option("--rounds", o->rounds, "Rounds; each times every model once (median)")
      ->check(positive());
  cmd->add_option("--seconds-per-round", o->seconds_per_round,
                  "Timed seconds per model and round (at least 5 passes)")
      ->check(positive());
  cmd->add_option("--json", o->json, "Also write the per-round figures to this file");
  cmd->callback([o] { run(*o); });
}

}  // namespace reach::cli
