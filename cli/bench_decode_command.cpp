// `reach bench decode`: the inference cost of each attention family versus context length,
// on a whole model (random weights: cost does not depend on them): prefill tokens/s (the
// fused forward over n tokens, filling the KV cache) and decode ms/token (one token through
// every layer over a cache of n tokens), with the cache's memory and the keys a query reads.
// Contexts beyond --max-prefill are decoded over a cache filled with random keys and values
// (the decode kernel's work depends on the key set, not on the values). The chunk family
// (--families chunk) decodes over the window of its layers plus the landmarks of every past
// chunk and the k chunks its retrieval layers select.
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/eval_device.hpp"
#include "cli/gnuplot.hpp"
#include "cli/validators.hpp"
#include "infer/decode_graph.hpp"
#include "model/attention/chunk_retrieval.hpp"
#include "model/attention/forward_context.hpp"
#include "model/attention/kv_cache.hpp"
#include "model/gpt.hpp"
#include "train/device.hpp"

namespace reach::cli {
namespace {

struct DecodeBenchOptions {
  std::vector<int64_t> lengths{1024, 4096, 16384, 65536, 262144, 1048576};
  std::vector<std::string> families{"dense", "window", "fibonacci", "power_of_two", "chunk"};
  std::string preset = "tiny";
  int64_t steps = 8;
  int64_t batch = 1;               // requests decoded together, all of the same length
  std::string precision = "fp32";  // or bf16 (CUDA: autocast, bf16 cache)
  int64_t max_prefill = 8192;
  int64_t chunk_size = 64, chunk_top_k = 8;
  double max_cache_gib = 4.0;
  bool cuda_graph = false;  // also time the steps replayed from a CUDA graph
  std::string device = "cpu";
  std::string json, markdown;
};

struct DecodeBenchRow {
  std::string family;
  int64_t context = 0;
  double cache_mib = 0;
  double prefill_tokens_per_s = 0;  // 0: not prefilled (cache filled with random rows)
  double decode_ms = 0;             // median per token
  double keys_per_query = 0;        // 0 when not counted (GPU)
  double graph_decode_ms = 0;       // --cuda-graph: median per token replayed (0: not run)
  std::string graph_skipped;        // why the graph did not run, when asked for
  std::string skipped;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void synchronize(const torch::Device& device) { train::synchronize(device); }

DecodeBenchRow bench_one(const DecodeBenchOptions& o, const EvalDevice& where,
                         const std::string& family, int64_t n) {
  DecodeBenchRow row;
  row.family = family;
  row.context = n;
  auto c = model::preset(o.preset);
  c.attention = model::parse_attention_family(family);
  c.schedule = model::AlphaSchedule::stagger;
  c.alpha_min = 1.0;
  c.alpha_max = 3.0;
  c.reach = std::max(n + o.steps, c.window);  // offsets reach across the whole context
  c.chunk_size = o.chunk_size;
  c.chunk_top_k = o.chunk_top_k;
  // The eager steps (a warm-up and --steps), then with --cuda-graph its first eager step, the
  // capture and --steps replays.
  const int64_t capacity = n + o.steps + 1 + (o.cuda_graph ? o.steps + 2 : 0);
  const double cache_bytes = model::attention::kv_cache_bytes_per_token(c, where.bf16 ? 2.0 : 4.0) *
                             static_cast<double>(capacity) * static_cast<double>(o.batch);
  row.cache_mib = cache_bytes / (1 << 20);
  if (cache_bytes > o.max_cache_gib * (1 << 30)) {
    row.skipped = fmt::format("cache {:.1f} GiB > --max-cache-gib {}", cache_bytes / (1 << 30),
                              o.max_cache_gib);
    return row;
  }
  torch::manual_seed(1);
  model::Gpt net(c);
  net->eval();
  net->to(where.device);
  torch::NoGradGuard no_grad;
  model::attention::KvCache cache(c.layers);
  cache.reserve(capacity);
  model::attention::ForwardContext context;
  context.cache = &cache;
  const train::Bf16Autocast autocast(where.bf16);
  const auto tokens = torch::randint(0, c.vocab_size, {o.batch, n}, torch::kLong).to(where.device);
  if (n <= o.max_prefill) {
    synchronize(where.device);
    const auto t0 = std::chrono::steady_clock::now();
    net->forward_with(context, tokens);
    synchronize(where.device);
    row.prefill_tokens_per_s = static_cast<double>(n * o.batch) / seconds_since(t0);
  } else {
    model::attention::fill_random_kv_cache(
        c, cache, n,
        torch::TensorOptions()
            .device(where.device)
            .dtype(where.bf16 ? torch::kBFloat16 : torch::kFloat32),
        o.batch);
  }
  model::attention::BudgetUsage usage;
  std::vector<double> times;
  for (int64_t s = 0; s <= o.steps; ++s) {
    model::attention::ForwardContext step;
    step.cache = &cache;
    step.position = cache.length();
    if (s > 0) step.usage = &usage;  // the first step warms up
    const auto token = torch::randint(0, c.vocab_size, {o.batch, 1}, torch::kLong).to(where.device);
    synchronize(where.device);
    const auto t0 = std::chrono::steady_clock::now();
    net->forward_with(step, token);
    synchronize(where.device);
    if (s > 0) times.push_back(seconds_since(t0) * 1e3);
  }
  std::sort(times.begin(), times.end());
  row.decode_ms = times[times.size() / 2];
  if (usage.queries > 0) {
    row.keys_per_query = static_cast<double>(usage.keys) / static_cast<double>(usage.queries);
  }
  if (o.cuda_graph) {
    // The same cache, each of its sequences now a request of its own (the graph's form),
    // every step after the capture replayed.
    const bool batched_form = c.attention != model::AttentionFamily::chunk;
    if (batched_form) {
      for (int64_t l = 0; l < cache.layers(); ++l) cache.layer(l).split_into_requests();
    }
    row.graph_skipped = batched_form ? infer::DecodeGraph::problem(net, cache)
                                     : "the chunk family has no batched step";
    if (row.graph_skipped.empty()) {
      infer::DecodeGraph graph(net, cache);
      times.clear();
      for (int64_t s = 0; s < o.steps + 2; ++s) {
        const auto token =
            torch::randint(0, c.vocab_size, {o.batch}, torch::kLong).to(where.device);
        synchronize(where.device);
        const auto t0 = std::chrono::steady_clock::now();
        graph.step(token);
        synchronize(where.device);
        if (s >= 2) times.push_back(seconds_since(t0) * 1e3);  // the eager step and the capture
      }
      std::sort(times.begin(), times.end());
      row.graph_decode_ms = times[times.size() / 2];
    }
  }
  return row;
}

std::string length_label(int64_t n) {
  if (n % (1 << 20) == 0) return fmt::format("{}M", n >> 20);
  if (n % 1024 == 0) return fmt::format("{}k", n >> 10);
  return std::to_string(n);
}

std::string markdown(const std::vector<DecodeBenchRow>& rows, int64_t batch, bool cuda_graph) {
  std::string out =
      cuda_graph ? "| family | context | keys/query | prefill tokens/s | decode ms/token | decode "
                   "ms/token, CUDA graph | KV cache MiB |\n"
                   "| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
                 : "| family | context | keys/query | prefill tokens/s | decode ms/token | KV "
                   "cache MiB |\n"
                   "| --- | ---: | ---: | ---: | ---: | ---: |\n";
  for (const auto& r : rows) {
    if (!r.skipped.empty()) {
      out += fmt::format("| {} | {} | — | — | skipped: {} |{} {:.0f} |\n", r.family,
                         length_label(r.context), r.skipped, cuda_graph ? " — |" : "", r.cache_mib);
      continue;
    }
    const std::string graph_cell = !cuda_graph ? ""
                                   : !r.graph_skipped.empty()
                                       ? " not taken: " + r.graph_skipped + " |"
                                       : fmt::format(" {:.3f} |", r.graph_decode_ms);
    out += fmt::format("| {} | {} | {} | {} | {:.3f} |{} {:.0f} |\n", r.family,
                       length_label(r.context),
                       r.keys_per_query > 0 ? fmt::format("{:.1f}", r.keys_per_query) : "—",
                       r.prefill_tokens_per_s > 0 ? fmt::format("{:.0f}", r.prefill_tokens_per_s)
                                                  : "— (random cache)",
                       r.decode_ms, graph_cell, r.cache_mib);
  }
  if (batch > 1) {
    out += fmt::format(
        "\n({} requests of the context length per step: decode ms is per step, one "
        "token for each request; KV cache MiB for all of them)\n",
        batch);
  }
  return out;
}

void run(const DecodeBenchOptions& o) {
  check_output_path(o.json, "--json");
  check_output_path(o.markdown, "--markdown");
  for (const auto& f : o.families) model::parse_attention_family(f);  // fail before any work
  model::preset(o.preset);
  const EvalDevice where = resolve_eval_device(o.device, o.precision);
  if (o.cuda_graph && !where.device.is_cuda()) {
    throw std::invalid_argument(
        "bench decode: --cuda-graph needs a CUDA device (--device cuda), got " +
        where.device.str());
  }
  const auto c = model::preset(o.preset);
  fmt::print(stderr,
             "[bench decode] preset {} ({} layers, d_model {}, {} heads, W {}), {} request(s) "
             "per step, {}; decode: median of {} steps after a warm-up; prefill up to {} "
             "tokens\n",
             o.preset, c.layers, c.d_model, c.heads, c.window, o.batch, where.describe(), o.steps,
             o.max_prefill);
  std::vector<DecodeBenchRow> rows;
  for (const auto& family : o.families) {
    for (const int64_t n : o.lengths) {
      rows.push_back(bench_one(o, where, family, n));
      const auto& r = rows.back();
      fmt::print(stderr, "[bench decode] {} at {}: {}{}\n", family, length_label(n),
                 r.skipped.empty() ? fmt::format("decode {:.3f} ms/token", r.decode_ms) : r.skipped,
                 r.graph_decode_ms > 0     ? fmt::format(", CUDA graph {:.3f}", r.graph_decode_ms)
                 : r.graph_skipped.empty() ? ""
                                           : ", CUDA graph not taken: " + r.graph_skipped);
    }
  }
  const auto table = markdown(rows, o.batch, o.cuda_graph);
  fmt::print("{}", table);
  if (!o.markdown.empty()) write_text_file(o.markdown, table);
  if (!o.json.empty()) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& r : rows) {
      nlohmann::json e{{"family", r.family},           {"context", r.context},
                       {"cache_mib", r.cache_mib},     {"device", where.describe()},
                       {"requests_per_step", o.batch}, {"preset", o.preset}};
      if (!r.skipped.empty()) {
        e["skipped"] = r.skipped;
      } else {
        e["decode_ms_per_token"] = r.decode_ms;
        e["prefill_tokens_per_s"] =
            r.prefill_tokens_per_s > 0 ? nlohmann::json(r.prefill_tokens_per_s) : nlohmann::json();
        e["keys_per_query"] =
            r.keys_per_query > 0 ? nlohmann::json(r.keys_per_query) : nlohmann::json();
        if (o.cuda_graph) {
          e["cuda_graph_decode_ms_per_token"] =
              r.graph_decode_ms > 0 ? nlohmann::json(r.graph_decode_ms) : nlohmann::json();
          if (!r.graph_skipped.empty()) e["cuda_graph_not_taken"] = r.graph_skipped;
        }
      }
      j.push_back(e);
    }
    write_text_file(o.json, j.dump(2) + "\n");
  }
}

}  // namespace

void add_bench_decode_command(CLI::App& app) {
  auto* group = app.get_subcommand("bench");
  auto o = std::make_shared<DecodeBenchOptions>();
  auto* cmd = group->add_subcommand(
      "decode",
      "Inference cost vs context length per attention family: prefill tokens/s, decode "
      "ms/token, KV cache memory, keys read per query (a whole model, random weights)");
  cmd->add_option("--lengths", o->lengths, "Context lengths in tokens")
      ->delimiter(',')
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--families", o->families, "dense, window, fibonacci, power_of_two, chunk")
      ->delimiter(',')
      ->check(CLI::IsMember({"dense", "window", "fibonacci", "power_of_two", "chunk"}))
      ->capture_default_str();
  cmd->add_option("--chunk-size", o->chunk_size, "Chunk family: tokens per chunk S")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--chunk-top-k", o->chunk_top_k, "Chunk family: most chunks a query reads k")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--preset", o->preset, "Model preset (micro, tiny, ...)")->capture_default_str();
  cmd->add_option("--steps", o->steps, "Timed decode steps per point (median)")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--max-prefill", o->max_prefill,
                  "Prefill (and time) contexts up to this many tokens; longer ones decode over "
                  "a cache of random rows")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--max-cache-gib", o->max_cache_gib,
                  "Skip points whose KV cache would exceed this (GiB)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--device", o->device, "cpu, auto, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--batch", o->batch,
                  "Requests decoded together in each step, all of the same length (decode "
                  "ms/token is then per step, one token for each request)")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--precision", o->precision,
                  "fp32, or bf16 (CUDA only: bf16 autocast and a bf16 cache)")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
  cmd->add_flag("--cuda-graph", o->cuda_graph,
                "Also time each point's decode steps replayed from a CUDA graph (one launch a "
                "step; after the eager steps, over the same cache; CUDA only, softmax families "
                "with RoPE or NoPE)");
  cmd->add_option("--json", o->json, "Write the rows as JSON");
  cmd->add_option("--markdown", o->markdown, "Write the table as Markdown");
  cmd->callback([o] { run(*o); });
}

}  // namespace reach::cli
