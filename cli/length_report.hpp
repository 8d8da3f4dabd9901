// Shared by `reach eval` and `reach demo`: length parsing and the perplexity-vs-length report
// (Markdown, JSON, gnuplot PNG).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eval/perplexity.hpp"
#include "infer/budgeted_forward.hpp"

namespace reach::cli {

struct ModelLengths {
  std::string label;
  int64_t train_length = 0;
  std::vector<eval::LengthResult> results;
  std::string checkpoint;  // the directory evaluated (JSON only; may be empty)
  std::string text;        // what was scored (JSON only; may be empty)
  // Per result (same order), when evaluated under a --budget; empty: the trained key set.
  std::vector<infer::BudgetUsed> budgets;
};

// Longest length --lengths accepts, in tokens (far beyond any real evaluation; it keeps the
// arithmetic exact and the error readable).
inline constexpr int64_t kMaxEvalLength = int64_t{1} << 40;

// "1x,2x,4x,8x" (multiples of train_length, any positive real) or whole token counts; every
// item resolves to 1..kMaxEvalLength tokens. Throws std::invalid_argument naming the item.
std::vector<int64_t> parse_lengths(const std::string& text, int64_t train_length);

// A length as a multiple of the training length: "2x", "1.5x", "0.0078x".
std::string multiple_label(int64_t length, int64_t train_length);

// One row per (model, length): NLL in nats per token, perplexity per token, and bits per byte
// when every result has it; with budgets, the rule, what it was at that length and the keys
// read per query.
std::string markdown_table(const std::vector<ModelLengths>& models);

// Writes whichever paths are non-empty. The PNG needs gnuplot (Debian gnuplot-nox).
// {rule, length, window, rungs, mass, keys_per_query} (null where unset / not measured).
nlohmann::json budget_json(const infer::BudgetUsed& budget);

// "W 16, K 4, p 0.9" (the parts a budget sets) or "trained".
std::string budget_label(const infer::ResolvedBudget& budget);

void write_reports(const std::vector<ModelLengths>& models, const std::string& json_path,
                   const std::string& markdown_path, const std::string& png_path);

}  // namespace reach::cli
