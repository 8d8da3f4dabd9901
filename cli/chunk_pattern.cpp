#include "cli/chunk_pattern.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <set>
#include <vector>

#include "cli/validators.hpp"
#include "pattern/chunk_selection.hpp"

namespace reach::cli {

std::shared_ptr<ChunkPatternOptions> add_chunk_pattern_options(CLI::App& cmd) {
  auto o = std::make_shared<ChunkPatternOptions>();
  o->chunk_size_flag =
      cmd.add_option("--chunk-size", o->chunk_size,
                     "Chunk size S: print chunk selection (hierarchical chunk attention) instead")
          ->check(positive());
  cmd.add_option("--top-k", o->top_k, "Chunks a query reads at most (k)")
      ->check(positive())
      ->needs(o->chunk_size_flag);
  cmd.add_option("--chunk-window", o->window,
                 "Local window W: chunks wholly inside the last W positions are not candidates")
      ->check(CLI::NonNegativeNumber)
      ->needs(o->chunk_size_flag);
  cmd.add_option("--chunk-budget", o->budget,
                 "Chunks read: fixed k, or a rule of the candidates C: fraction "
                 "(ceil(f C)), sqrt (ceil(f sqrt C)), log2 (ceil(f log2 C)), within min-k..k")
      ->check(CLI::IsMember({"fixed", "fraction", "sqrt", "log2"}))
      ->needs(o->chunk_size_flag);
  cmd.add_option("--chunk-fraction", o->fraction,
                 "Coefficient f of the rule (fraction: of the candidates, in (0, 1])")
      ->needs(o->chunk_size_flag);
  cmd.add_option("--chunk-min-k", o->min_k, "Fewest chunks read (every rule but fixed)")
      ->needs(o->chunk_size_flag);
  return o;
}

void run_chunk_pattern(const ChunkPatternOptions& o, int64_t seq_len) {
  const pattern::ChunkSelection sel{o.chunk_size, o.top_k,
                                    o.window,     pattern::parse_chunk_budget_rule(o.budget),
                                    o.fraction,   o.min_k};
  pattern::validate(sel);
  const int64_t n = seq_len;
  const int64_t s = sel.chunk_size;
  fmt::print("chunk selection: {} seq_len={} chunks={}\n", pattern::describe(sel), n,
             pattern::num_chunks(sel, n));
  std::set<int64_t> positions{0, s - 1, s, n - 1};
  for (int64_t t = 2 * s; t < n; t *= 2) positions.insert(t);
  fmt::print("{:>10}  {:>10}  {:>8}  {:>11}\n", "query t", "candidates", "selected", "tokens read");
  for (int64_t t : positions) {
    if (t < 0 || t >= n) continue;
    const int64_t c = pattern::candidate_chunks(sel, t);
    const int64_t k = pattern::selected_chunks(sel, c);
    fmt::print("{:>10}  {:>10}  {:>8}  {:>11}\n", t, c, k, k * s);
  }
  const int64_t total = pattern::retrieved_tokens(sel, n);
  const double causal_pairs = 0.5 * static_cast<double>(n) * static_cast<double>(n + 1);
  fmt::print(
      "retrieved tokens: {} in all, {:.1f} per query (at most {}), {:.4f}% of the causal "
      "matrix\n",
      total, static_cast<double>(total) / static_cast<double>(n), sel.top_k * s,
      100.0 * static_cast<double>(total) / causal_pairs);
  const int64_t choosing = pattern::choosing_queries(sel, n);
  fmt::print("queries that choose (fewer chunks read than candidates): {} of {} ({:.1f}%)\n",
             choosing, n, 100.0 * static_cast<double>(choosing) / static_cast<double>(n));
}

}  // namespace reach::cli
