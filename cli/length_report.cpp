#include "cli/length_report.hpp"

#include <fmt/core.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "cli/gnuplot.hpp"

namespace reach::cli {

std::vector<int64_t> parse_lengths(const std::string& text, int64_t train_length) {
  std::vector<int64_t> lengths;
  std::stringstream in(text);
  std::string item;
  size_t items = 0;
  while (std::getline(in, item, ',')) {
    ++items;
    if (item.empty()) throw std::invalid_argument("--lengths: empty item in '" + text + "'");
    const bool multiple = item.back() == 'x';
    const std::string number = multiple ? item.substr(0, item.size() - 1) : item;
    size_t used = 0;
    double value = 0;
    try {
      value = std::stod(number, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != number.size() || number.empty() || !(value > 0) || !std::isfinite(value)) {
      throw std::invalid_argument("--lengths: '" + item + "' is not a positive length or multiple");
    }
    if (!multiple && value != std::floor(value)) {
      throw std::invalid_argument("--lengths: '" + item +
                                  "' is not a whole number of tokens (write a multiple as " + item +
                                  "x)");
    }
    const double tokens = multiple ? value * static_cast<double>(train_length) : value;
    if (tokens > static_cast<double>(kMaxEvalLength)) {
      throw std::invalid_argument(
          fmt::format("--lengths: '{}' is {:.3g} tokens, more than the {} "
                      "that reach evaluates",
                      item, tokens, kMaxEvalLength));
    }
    const auto length = static_cast<int64_t>(std::llround(tokens));
    if (length < 1) {
      throw std::invalid_argument(fmt::format(
          "--lengths: '{}' is less than one token (training length {})", item, train_length));
    }
    lengths.push_back(length);
  }
  if (items == 0 || (!text.empty() && text.back() == ',')) {
    throw std::invalid_argument(items == 0 ? "--lengths: no lengths given"
                                           : "--lengths: empty item in '" + text + "'");
  }
  return lengths;
}

std::string multiple_label(int64_t length, int64_t train_length) {
  const double m = static_cast<double>(length) / static_cast<double>(train_length);
  if (m == std::floor(m)) return fmt::format("{:.0f}x", m);
  return fmt::format("{:.3g}x", m);
}

nlohmann::json budget_json(const infer::BudgetUsed& b) {
  nlohmann::json j{{"rule", b.rule}, {"length", b.length}};
  j["window"] = b.resolved.window ? nlohmann::json(*b.resolved.window) : nlohmann::json();
  j["rungs"] = b.resolved.rungs ? nlohmann::json(*b.resolved.rungs) : nlohmann::json();
  j["mass"] = b.resolved.mass ? nlohmann::json(*b.resolved.mass) : nlohmann::json();
  j["chunks"] = b.resolved.chunks ? nlohmann::json(*b.resolved.chunks) : nlohmann::json();
  j["chunk_mass"] =
      b.resolved.chunk_mass ? nlohmann::json(*b.resolved.chunk_mass) : nlohmann::json();
  j["keys_per_query"] = b.measured ? nlohmann::json(b.keys_per_query) : nlohmann::json();
  return j;
}

std::string budget_label(const infer::ResolvedBudget& budget) {
  std::string out;
  auto add = [&](const std::string& part) { out += (out.empty() ? "" : ", ") + part; };
  if (budget.window) add(fmt::format("W {}", *budget.window));
  if (budget.rungs) add(fmt::format("K {}", *budget.rungs));
  if (budget.mass) add(fmt::format("p {}", *budget.mass));
  if (budget.chunks) add(fmt::format("k {}", *budget.chunks));
  if (budget.chunk_rule) add("k per query");
  if (budget.chunk_mass) add(fmt::format("chunk p {}", *budget.chunk_mass));
  return out.empty() ? "trained" : out;
}

std::string markdown_table(const std::vector<ModelLengths>& models) {
  bool bytes = !models.empty(), budgets = false;
  for (const auto& m : models) {
    for (const auto& r : m.results) bytes = bytes && r.bytes > 0;
    budgets = budgets || !m.budgets.empty();
  }
  std::string out = fmt::format(
      "| model |{} length | x train | windows | tokens | NLL (nats/token) | perplexity (per "
      "token) |{}\n| --- |{} ---: | ---: | ---: | ---: | ---: | ---: |{}\n",
      budgets ? " budget | at this length | keys/query |" : "", bytes ? " bits/byte |" : "",
      budgets ? " --- | --- | ---: |" : "", bytes ? " ---: |" : "");
  for (const auto& m : models) {
    for (size_t i = 0; i < m.results.size(); ++i) {
      const auto& r = m.results[i];
      std::string budget;
      if (budgets) {
        if (i < m.budgets.size()) {
          const auto& b = m.budgets[i];
          budget = fmt::format(" {} | {} | {} |", b.rule, budget_label(b.resolved),
                               b.measured ? fmt::format("{:.1f}", b.keys_per_query) : "—");
        } else {
          budget = " full | trained | — |";
        }
      }
      out += fmt::format("| {} |{} {} | {} | {} | {} | {:.4f} | {:.3f} |{}\n", m.label, budget,
                         r.length, multiple_label(r.length, m.train_length), r.windows, r.tokens,
                         r.mean_nll, r.perplexity,
                         bytes ? fmt::format(" {:.4f} |", r.bits_per_byte) : "");
    }
  }
  return out;
}

void write_reports(const std::vector<ModelLengths>& models, const std::string& json_path,
                   const std::string& markdown_path, const std::string& png_path) {
  if (!json_path.empty()) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& m : models) {
      for (size_t i = 0; i < m.results.size(); ++i) {
        const auto& r = m.results[i];
        nlohmann::json row{{"model", m.label},           {"train_length", m.train_length},
                           {"length", r.length},         {"windows", r.windows},
                           {"tokens", r.tokens},         {"mean_nll", r.mean_nll},
                           {"perplexity", r.perplexity}, {"bucket_nll", r.bucket_nll}};
        if (r.bytes > 0) {
          row["bytes"] = r.bytes;
          row["bits_per_byte"] = r.bits_per_byte;
        }
        if (!m.checkpoint.empty()) row["checkpoint"] = m.checkpoint;
        if (!m.text.empty()) row["text"] = m.text;
        if (i < m.budgets.size()) row["budget"] = budget_json(m.budgets[i]);
        j.push_back(row);
      }
    }
    write_text_file(json_path, j.dump(2) + "\n");
  }
  if (!markdown_path.empty()) {
    write_text_file(markdown_path, markdown_table(models));
  }
  if (png_path.empty()) return;
  // Data files for gnuplot: perplexity vs length, and loss per position bucket at the
  // longest length.
  const PlotDataDir plot_dir("plot");
  const auto& dir = plot_dir.path();
  std::string plot_ppl, plot_pos;
  for (size_t i = 0; i < models.size(); ++i) {
    const auto& m = models[i];
    const auto ppl_file = dir / fmt::format("ppl{}.dat", i),
               pos_file = dir / fmt::format("pos{}.dat", i);
    std::ofstream ppl(ppl_file), pos(pos_file);
    for (const auto& r : m.results) {
      ppl << static_cast<double>(r.length) / static_cast<double>(m.train_length) << " "
          << r.perplexity << "\n";
    }
    const auto& longest = m.results.back();
    for (size_t b = 0; b < longest.bucket_nll.size(); ++b) {
      pos << (static_cast<double>(b) + 0.5) * static_cast<double>(longest.length) /
                 static_cast<double>(longest.bucket_nll.size())
          << " " << longest.bucket_nll[b] << "\n";
    }
    plot_ppl += fmt::format("{}'{}' using 1:2 with linespoints title '{}'", i ? ", " : "",
                            ppl_file.string(), m.label);
    plot_pos += fmt::format("{}'{}' using 1:2 with linespoints title '{}'", i ? ", " : "",
                            pos_file.string(), m.label);
  }
  const std::string script = fmt::format(
      "set terminal png size 1200,450 noenhanced\nset output '{}'\nset multiplot layout 1,2\n"
      "set title 'perplexity vs length'\nset xlabel 'length / training length'\n"
      "set ylabel 'perplexity'\nset logscale x 2\nset grid\nplot {}\nunset logscale x\n"
      "set title 'loss vs position (longest length)'\nset xlabel 'position'\n"
      "set ylabel 'NLL (nats)'\nplot {}\nunset multiplot\n",
      png_path, plot_ppl, plot_pos);
  run_gnuplot(script, png_path);
}

}  // namespace reach::cli
