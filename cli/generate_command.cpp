// `reach generate CKPT [--prompt TEXT | --prompt-file FILE | stdin] [--max-new-tokens N]
//  [--temperature T] [--top-k K] [--top-p P] [--seed S] [--stop STR]... [--budget RULE]`:
// text from a trained checkpoint, streamed to stdout; timing and the budget used on stderr.
#include <fmt/core.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "cli/checkpoint_choice.hpp"
#include "cli/commands.hpp"
#include "cli/eval_device.hpp"
#include "data/tokenizer/tokenizer.hpp"
#include "infer/generator.hpp"
#include "train/checkpoint.hpp"
#include "train/device.hpp"

namespace reach::cli {
namespace {

struct GenerateOptions {
  std::string checkpoint, prompt, prompt_file;
  bool have_prompt = false;
  int64_t max_new_tokens = 256;
  int64_t max_context = 1 << 20;
  double temperature = 0.0;
  int64_t top_k = 0;
  double top_p = 1.0;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  std::string budget = "full";
  bool quiet = false;
  bool freeze = true;
  std::string device = "cpu", precision = "fp32";
  bool cuda_graph = false;
};

std::string read_prompt(const GenerateOptions& o) {
  if (o.have_prompt) return o.prompt;
  std::stringstream text;
  if (!o.prompt_file.empty()) {
    std::ifstream in(o.prompt_file, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open prompt file " + o.prompt_file);
    text << in.rdbuf();
  } else {
    text << std::cin.rdbuf();
  }
  return text.str();
}

void run(const GenerateOptions& o) {
  // Everything that needs no checkpoint is checked before loading one.
  infer::GenerationRequest request;
  request.max_new_tokens = o.max_new_tokens;
  request.max_context = o.max_context;
  request.stop = o.stop;
  request.sampling = {o.temperature, o.top_k, o.top_p, o.seed};
  infer::validate(request.sampling);
  for (const auto& s : o.stop) {
    if (s.empty()) throw std::invalid_argument("--stop: stop strings must not be empty");
  }
  request.budget = infer::parse_budget_rule(o.budget);
  const EvalDevice where = resolve_eval_device(o.device, o.precision);
  if (o.cuda_graph && !where.device.is_cuda()) {
    throw std::invalid_argument("--cuda-graph needs a CUDA device (--device cuda), got " +
                                where.device.str());
  }
  request.cuda_graph = o.cuda_graph;
  const auto prompt = read_prompt(o);
  if (prompt.empty()) {
    throw std::invalid_argument("empty prompt: give --prompt, --prompt-file or text on stdin");
  }

  auto chosen = load_chosen_checkpoint(o.checkpoint, "generate");
  const std::string dir = chosen.dir;
  auto ckpt = std::move(chosen.checkpoint);
  const auto tokenizer = data::load_tokenizer(dir);
  const auto text = infer::TokenText::load(tokenizer->kind(), dir);
  for (const auto id : tokenizer->encode(prompt)) request.prompt.push_back(id);
  if (o.freeze) ckpt.model->freeze_schedules();
  prepare_for_eval(*ckpt.model, where, "checkpoint " + dir);
  const train::Bf16Autocast autocast(where.bf16);

  const auto result = infer::generate(ckpt.model, text, request, [](const std::string& piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  });
  std::fputc('\n', stdout);
  std::fflush(stdout);
  if (o.quiet) return;
  const auto n = static_cast<double>(result.tokens.size());
  fmt::print(stderr,
             "prefill: {} tokens in {:.3f} s ({:.0f} tokens/s)\n"
             "decode: {} tokens in {:.3f} s ({:.1f} tokens/s), stopped by {}\n"
             "budget {}: {:.1f} keys read per query and head\n",
             request.prompt.size(), result.prefill_seconds,
             static_cast<double>(request.prompt.size()) / std::max(result.prefill_seconds, 1e-9),
             result.tokens.size(), result.decode_seconds, n / std::max(result.decode_seconds, 1e-9),
             result.stop_reason, request.budget.text, result.keys_per_query);
  if (o.cuda_graph) {
    fmt::print(
        stderr, "{}\n",
        result.graph_refused.empty()
            ? fmt::format("CUDA graph: {} of {} decode steps replayed (keys read counted "
                          "on the eager ones)",
                          result.graph_steps,
                          std::max<int64_t>(static_cast<int64_t>(result.tokens.size()) - 1, 0))
            : "CUDA graph not taken: " + result.graph_refused);
  }
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  auto* cmd = app.add_subcommand("generate", "Generate text from a checkpoint (KV-cache decode)");
  cmd->add_option("checkpoint", o->checkpoint, "Checkpoint directory (or a run's out_dir)")
      ->required();
  auto* prompt = cmd->add_option("--prompt", o->prompt, "Prompt text (default: standard input)");
  cmd->add_option("--prompt-file", o->prompt_file, "Read the prompt from a file")->excludes(prompt);
  cmd->add_option("--max-new-tokens", o->max_new_tokens, "Tokens to generate at most")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-context", o->max_context,
                  "Limit on prompt + new tokens (the KV cache is allocated for them)");
  cmd->add_option("--temperature", o->temperature, "0 = greedy; > 0 samples");
  cmd->add_option("--top-k", o->top_k, "Sample among the k most likely tokens (0 = all)");
  cmd->add_option("--top-p", o->top_p, "Nucleus: smallest set with mass >= p, p in (0, 1]");
  cmd->add_option("--seed", o->seed, "Sampling seed (same seed, same text)");
  cmd->add_option("--stop", o->stop, "Stop when the text contains this string (repeatable)");
  cmd->add_option(
      "--budget", o->budget,
      "Keys per query: full | window=W,rungs=K | rungs=2*log2(n) | mass=0.9 | chunks=K | "
      "chunks=sqrt(c) | chunk_mass=0.9 "
      "(docs/inference.md)");
  cmd->add_option("--device", o->device, "cpu, auto, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--precision", o->precision,
                  "fp32, or bf16 (CUDA only: bf16 autocast and a bf16 cache)")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
  cmd->add_flag("--cuda-graph", o->cuda_graph,
                "CUDA: replay the decode steps from a CUDA graph (one launch a token; softmax "
                "families with RoPE or NoPE under the full budget, else eager steps)");
  cmd->add_flag("--quiet", o->quiet, "No timing report on stderr");
  cmd->add_flag("!--no-freeze", o->freeze,
                "Learned schedules: decode their real offsets instead of freezing them to "
                "integers");
  cmd->callback([o, prompt] {
    o->have_prompt = prompt->count() > 0;
    run(*o);
  });
}

}  // namespace reach::cli
