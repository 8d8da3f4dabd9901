// `reach budget-study CKPT... [--lengths 1x,4x,16x] [--budget RULE]... [--tolerance 0.01]
//  [--max-tokens N] [--examples N] [--device cpu] [--json F] [--markdown F] [--png F]`:
// the seed-004 study. Quality (perplexity for a language-model checkpoint, answer accuracy
// for a task run) versus the attention budget at several lengths, over the same weights;
// at each length the smallest budget (fewest keys read per query) within the tolerance of
// the full key set's quality.
#include <fmt/core.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/budget_eval.hpp"
#include "cli/checkpoint_choice.hpp"
#include "cli/commands.hpp"
#include "cli/eval_device.hpp"
#include "cli/eval_text.hpp"
#include "cli/gnuplot.hpp"
#include "cli/length_report.hpp"
#include "cli/model_label.hpp"
#include "cli/task_report.hpp"
#include "cli/validators.hpp"
#include "data/tokenizer/tokenizer.hpp"
#include "train/task_trainer.hpp"

namespace reach::cli {
namespace {

namespace fs = std::filesystem;

struct StudyOptions {
  std::vector<std::string> checkpoints;
  std::string lengths = "1x,4x,16x";
  std::vector<std::string> budgets;
  double tolerance = 0.01;
  int64_t max_tokens = 8192;
  int64_t examples = 0;
  std::string device = "cpu";
  std::string json, markdown, png;
};

// One (budget, length) measurement.
struct StudyPoint {
  infer::BudgetUsed budget;
  double quality = 0;   // perplexity (lower is better) or accuracy in [0, 1] (higher)
  double relative = 0;  // quality / the full key set's quality at this length
  bool within = false;  // within the tolerance of full quality
};

struct StudyModel {
  std::string label, checkpoint;
  bool task = false;  // quality is accuracy (else perplexity)
  int64_t train_length = 0;
  std::vector<int64_t> lengths;
  std::vector<std::string> rules;                         // budgets, "full" first
  std::map<std::string, std::vector<StudyPoint>> points;  // rule -> one per length
};

bool is_task_run(const std::string& dir) {
  const fs::path config = fs::path(dir) / "config.toml";
  if (!fs::exists(config)) return false;
  std::ifstream in(config);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("[task]", 0) == 0) return true;
  }
  return false;
}

// Budgets worth trying on this model, when none are given: what its family can cut.
std::vector<std::string> default_budgets(const model::ModelConfig& c, model::Gpt& net) {
  std::vector<std::string> out;
  const bool dense = c.attention == model::AttentionFamily::dense;
  const bool dilated = model::is_dilated(c.attention);
  const bool learned = c.schedule == model::AlphaSchedule::learned;
  if (dilated && !learned) {
    size_t rungs = 0;
    for (const auto& block : net->blocks)
      rungs = std::max(rungs, block->attn->integer_offsets().size());
    for (size_t k = 0; k < rungs; ++k) out.push_back(fmt::format("rungs={}", k));
  }
  if (!dense) {
    for (int64_t divisor : {2, 4, 8}) {
      if (c.window / divisor >= 1) out.push_back(fmt::format("window={}", c.window / divisor));
    }
    if (dilated && !learned && c.window / 2 >= 1) {
      out.push_back(fmt::format("window={},rungs=0", c.window / 2));
    }
  }
  for (const char* mass : {"mass=0.99", "mass=0.95", "mass=0.9", "mass=0.8", "mass=0.6"}) {
    out.emplace_back(mass);
  }
  if (c.attention == model::AttentionFamily::chunk) {
    // Fixed k below the trained one, rules of the candidates C (every candidate included:
    // more than the model was trained to read), and the dynamic chunk mass.
    for (int64_t k = 1; k < c.chunk_top_k; ++k) out.push_back(fmt::format("chunks={}", k));
    for (const char* rule :
         {"chunks=c", "chunks=0.25*c", "chunks=sqrt(c)", "chunks=log2(c)", "chunk_mass=0.99",
          "chunk_mass=0.9", "chunk_mass=0.7", "chunk_mass=0.5"}) {
      out.emplace_back(rule);
    }
  }
  return out;
}

std::vector<std::string> study_rules(const StudyOptions& o, const model::ModelConfig& c,
                                     model::Gpt& net) {
  std::vector<std::string> rules{"full"};
  for (const auto& r : o.budgets.empty() ? default_budgets(c, net) : o.budgets) {
    if (std::find(rules.begin(), rules.end(), r) == rules.end()) rules.push_back(r);
  }
  return rules;
}

infer::BudgetRule parse_rule(const std::string& text) {
  try {
    return infer::parse_budget_rule(text);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("--budget: ") + e.what());
  }
}

void progress(const StudyModel& m, const StudyPoint& p) {
  fmt::print(stderr, "[budget-study] {}: {} tokens, {}: {} {:.4f}, {} keys/query\n", m.label,
             p.budget.length, p.budget.rule, m.task ? "accuracy" : "perplexity", p.quality,
             p.budget.measured ? fmt::format("{:.1f}", p.budget.keys_per_query) : "—");
}

StudyModel study_language_model(const StudyOptions& o, const EvalDevice& where,
                                const std::string& given) {
  auto chosen = load_chosen_checkpoint(given, "budget-study");
  auto& ckpt = chosen.checkpoint;
  StudyModel m{model_label(ckpt.config.model),
               chosen.dir,
               false,
               ckpt.config.seq_len,
               parse_lengths(o.lengths, ckpt.config.seq_len),
               {},
               {}};
  const auto text = eval_text("", "", ckpt, chosen.dir);
  eval::require_heldout_length(
      text.documents, m.lengths,
      "checkpoint '" + chosen.dir + "', text: " + text.description + ": lower --lengths");
  const auto tokenizer = data::load_tokenizer(chosen.dir);
  prepare_for_eval(*ckpt.model, where, "checkpoint '" + chosen.dir + "'");
  m.rules = study_rules(o, ckpt.config.model, ckpt.model);
  for (const auto& rule_text : m.rules) {
    const auto rule = parse_rule(rule_text);
    const auto scored = evaluate_budgeted_lengths(ckpt.model, where, text.documents, m.lengths,
                                                  o.max_tokens, tokenizer->token_bytes(), rule);
    for (size_t i = 0; i < m.lengths.size(); ++i) {
      StudyPoint p{scored.budgets[i], scored.results[i].perplexity, 0, false};
      progress(m, p);
      m.points[rule_text].push_back(p);
    }
  }
  return m;
}

StudyModel study_task_run(const StudyOptions& o, const EvalDevice& where, const std::string& dir) {
  auto run = train::load_task_run(dir);
  std::vector<std::string> overrides;
  if (o.examples > 0) overrides.push_back(fmt::format("eval.examples={}", o.examples));
  // No eval.max_length cut: the study's lengths are the ones asked for.
  const auto lengths = parse_lengths(o.lengths, run.config.train_length);
  std::vector<int64_t> multipliers;
  for (int64_t length : lengths) {
    if (length % run.config.train_length != 0) {
      throw std::invalid_argument(fmt::format(
          "--lengths: task run '{}' is evaluated at whole multiples of its training length {}; "
          "{} tokens is not one",
          dir, run.config.train_length, length));
    }
    multipliers.push_back(length / run.config.train_length);
  }
  overrides.push_back(
      fmt::format("eval.max_length={}", *std::max_element(lengths.begin(), lengths.end())));
  auto config = train::parse_task_config(train::to_toml(run.config), overrides);
  StudyModel m{task_run_label(config), dir, true, config.train_length, lengths, {}, {}};
  prepare_for_eval(*run.model, where, "task run '" + dir + "'");
  m.rules = study_rules(o, config.model, run.model);
  for (const auto& rule_text : m.rules) {
    const auto rule = parse_rule(rule_text);
    std::map<int64_t, model::attention::BudgetUsage> counted;
    std::map<int64_t, infer::BudgetUsed> measured;
    const auto results = train::evaluate_task_model(
        run.model, config, multipliers, {}, {}, [&](const torch::Tensor& tokens) {
          const int64_t length = tokens.size(1);
          if (rule.is_dynamic())
            return infer::budgeted_logits(run.model, tokens, rule, &counted[length]);
          if (!measured.contains(length)) {
            measured[length] = infer::measure_budget(run.model, tokens[0], rule);
          }
          return infer::budgeted_logits(run.model, tokens, rule);
        });
    for (const auto& r : results) {
      infer::BudgetUsed used{rule.text, r.length, rule.at(r.length), 0, false};
      if (rule.is_dynamic() && counted.contains(r.length)) {
        used.keys_per_query = infer::keys_per_query(counted[r.length]);
        used.measured = true;
      } else if (measured.contains(r.length)) {
        used = measured[r.length];
      }
      StudyPoint p{used, r.accuracy, 0, false};
      progress(m, p);
      m.points[rule_text].push_back(p);
    }
  }
  return m;
}

// Relative quality and the tolerance test against the full key set at each length.
void compare_to_full(StudyModel& m, double tolerance) {
  const auto& full = m.points.at("full");
  for (auto& [rule, points] : m.points) {
    for (size_t i = 0; i < points.size(); ++i) {
      auto& p = points[i];
      const double reference = full[i].quality;
      p.relative = reference > 0 ? p.quality / reference : 0;
      p.within = m.task ? p.quality >= (1.0 - tolerance) * reference
                        : p.quality <= (1.0 + tolerance) * reference;
    }
  }
}

// The smallest budget (fewest keys read per query) within the tolerance at length index i.
const StudyPoint* smallest_within(const StudyModel& m, size_t i, std::string* rule) {
  const StudyPoint* best = nullptr;
  for (const auto& r : m.rules) {
    const auto& p = m.points.at(r)[i];
    if (!p.within || !p.budget.measured) continue;
    if (!best || p.budget.keys_per_query < best->budget.keys_per_query) {
      best = &p;
      *rule = r;
    }
  }
  return best;
}

std::string study_markdown(const std::vector<StudyModel>& models, double tolerance) {
  std::string out;
  for (const auto& m : models) {
    const char* metric = m.task ? "accuracy" : "perplexity";
    out +=
        fmt::format("### {} ({}, trained at {} tokens)\n\n", m.label, m.checkpoint, m.train_length);
    out += fmt::format(
        "{} (keys read per query and head) per budget and length; * within {:g}% "
        "of the full key set\n\n| budget |",
        metric, 100 * tolerance);
    std::string rule_line = "| --- |";
    for (int64_t length : m.lengths) {
      out += fmt::format(" {} ({}) |", length, multiple_label(length, m.train_length));
      rule_line += " ---: |";
    }
    out += "\n" + rule_line + "\n";
    for (const auto& r : m.rules) {
      out += fmt::format("| {} |", r);
      for (const auto& p : m.points.at(r)) {
        const std::string value =
            m.task ? fmt::format("{:.1f}%", 100 * p.quality) : fmt::format("{:.3f}", p.quality);
        out +=
            fmt::format(" {}{} ({}) |", value, p.within ? "*" : "",
                        p.budget.measured ? fmt::format("{:.1f}", p.budget.keys_per_query) : "—");
      }
      out += "\n";
    }
    out += fmt::format(
        "\nSmallest budget within {:g}% of full {} at each length\n\n| length | full {} | full "
        "keys/query | smallest budget | its {} | its keys/query | of full keys | of all n keys "
        "|\n| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |\n",
        100 * tolerance, metric, metric, metric);
    for (size_t i = 0; i < m.lengths.size(); ++i) {
      const auto& full = m.points.at("full")[i];
      auto fmt_q = [&](double q) {
        return m.task ? fmt::format("{:.1f}%", 100 * q) : fmt::format("{:.3f}", q);
      };
      std::string rule;
      const auto* best = smallest_within(m, i, &rule);
      if (!best || !full.budget.measured) {
        out +=
            fmt::format("| {} | {} | — | — | — | — | — | — |\n", m.lengths[i], fmt_q(full.quality));
        continue;
      }
      const double n = static_cast<double>(m.lengths[i]);
      out += fmt::format("| {} | {} | {:.1f} | {} | {} | {:.1f} | {:.0f}% | {:.2f}% |\n",
                         m.lengths[i], fmt_q(full.quality), full.budget.keys_per_query, rule,
                         fmt_q(best->quality), best->budget.keys_per_query,
                         100 * best->budget.keys_per_query / full.budget.keys_per_query,
                         100 * best->budget.keys_per_query / n);
    }
    out += "\n";
  }
  return out;
}

nlohmann::json study_json(const std::vector<StudyModel>& models, double tolerance) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& m : models) {
    nlohmann::json points = nlohmann::json::array(), smallest = nlohmann::json::array();
    for (const auto& r : m.rules) {
      for (const auto& p : m.points.at(r)) {
        points.push_back({{"budget", budget_json(p.budget)},
                          {m.task ? "accuracy" : "perplexity", p.quality},
                          {"relative_to_full", p.relative},
                          {"within_tolerance", p.within}});
      }
    }
    for (size_t i = 0; i < m.lengths.size(); ++i) {
      std::string rule;
      const auto* best = smallest_within(m, i, &rule);
      smallest.push_back({{"length", m.lengths[i]},
                          {"rule", best ? nlohmann::json(rule) : nlohmann::json()},
                          {"keys_per_query",
                           best ? nlohmann::json(best->budget.keys_per_query) : nlohmann::json()}});
    }
    j.push_back({{"model", m.label},
                 {"checkpoint", m.checkpoint},
                 {"metric", m.task ? "accuracy" : "perplexity"},
                 {"train_length", m.train_length},
                 {"tolerance", tolerance},
                 {"points", points},
                 {"smallest_within_tolerance", smallest}});
  }
  return j;
}

// Quality relative to the full key set versus keys read per query, one line per
// (model, length).
void study_png(const std::vector<StudyModel>& models, const std::string& png) {
  const PlotDataDir plot_dir("budget-study");
  std::string plots;
  int file_index = 0;
  bool task = false;
  for (const auto& m : models) {
    task = task || m.task;
    for (size_t i = 0; i < m.lengths.size(); ++i) {
      std::vector<std::pair<double, double>> xy;
      for (const auto& r : m.rules) {
        const auto& p = m.points.at(r)[i];
        if (p.budget.measured) xy.emplace_back(p.budget.keys_per_query, p.relative);
      }
      std::sort(xy.begin(), xy.end());
      const auto file = plot_dir.path() / fmt::format("s{}.dat", file_index++);
      std::ofstream data(file);
      for (const auto& [x, y] : xy) data << x << " " << y << "\n";
      plots += fmt::format("{}'{}' using 1:2 with linespoints lw 2 title '{} at {} tokens'",
                           plots.empty() ? "" : ", ", file.string(), m.label, m.lengths[i]);
    }
  }
  const std::string script = fmt::format(
      "set terminal png size 1000,600 noenhanced\nset output '{}'\n"
      "set title 'quality vs attention budget (same weights)'\n"
      "set xlabel 'keys read per query and head'\nset ylabel '{} / full key set'\n"
      "set logscale x 2\nset grid\nset key {}\nplot {}\n",
      png, task ? "accuracy" : "perplexity", task ? "bottom right" : "top right", plots);
  run_gnuplot(script, png);
}

void run_study(const StudyOptions& o) {
  check_output_path(o.json, "--json");
  check_output_path(o.markdown, "--markdown");
  check_output_path(o.png, "--png");
  for (const auto& b : o.budgets) parse_rule(b);  // bad rules fail before any work
  const EvalDevice where = resolve_eval_device(o.device, "fp32");
  std::vector<StudyModel> models;
  for (const auto& given : o.checkpoints) {
    models.push_back(is_task_run(given) ? study_task_run(o, where, given)
                                        : study_language_model(o, where, given));
    compare_to_full(models.back(), o.tolerance);
  }
  const auto table = study_markdown(models, o.tolerance);
  fmt::print("{}", table);
  if (!o.markdown.empty()) write_text_file(o.markdown, table);
  if (!o.json.empty()) write_text_file(o.json, study_json(models, o.tolerance).dump(2) + "\n");
  if (!o.png.empty()) study_png(models, o.png);
}

}  // namespace

void add_budget_study_command(CLI::App& app) {
  auto o = std::make_shared<StudyOptions>();
  auto* cmd = app.add_subcommand(
      "budget-study",
      "Quality versus attention budget at several lengths over the same weights (seed 004): "
      "perplexity for a checkpoint, accuracy for a task run; the smallest budget within the "
      "tolerance of the full key set at each length");
  cmd->add_option("checkpoint", o->checkpoints,
                  "Checkpoints or runs' out_dirs (perplexity on their held-out text), or task "
                  "run directories from `reach tasks train` (answer accuracy)")
      ->required();
  cmd->add_option("--lengths", o->lengths,
                  "Lengths: multiples of the training length (4x) or token counts")
      ->capture_default_str();
  cmd->add_option("--budget", o->budgets,
                  "A budget rule to measure (repeatable; the full key set is always measured). "
                  "Default: what the family can cut (rungs=0..K-1, window=W/2,W/4,W/8, "
                  "window=W/2,rungs=0, mass=0.99..0.6; chunk family: chunks=1..k-1, chunks=c, "
                  "0.25*c, sqrt(c), log2(c), chunk_mass=0.99..0.5)");
  cmd->add_option("--tolerance", o->tolerance,
                  "Within this fraction of full quality: perplexity <= (1 + t) x full, "
                  "accuracy >= (1 - t) x full")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--max-tokens", o->max_tokens, "Predicted tokens per length and budget")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--examples", o->examples, "Task runs: examples per length (default: the run's)")
      ->check(positive());
  cmd->add_option("--device", o->device,
                  "cpu (default: keys read are counted by the CPU decode kernel, and mass "
                  "budgets run only there), auto, cuda or cuda:N")
      ->capture_default_str();
  cmd->add_option("--json", o->json, "Write every point and the smallest budgets as JSON");
  cmd->add_option("--markdown", o->markdown, "Write the tables as Markdown");
  cmd->add_option("--png", o->png,
                  "Plot quality relative to the full key set vs keys read per query (gnuplot)");
  cmd->footer(
      "\nHow it works: every budget is a run-time parameter over the same weights "
      "(docs/inference.md). At each length L the rule is resolved at n = L (rungs=2*log2(n) "
      "reads ceil(2 log2 L) rungs), the model is scored at that budget (perplexity over "
      "--max-tokens predicted tokens of held-out text, or accuracy on the task's evaluation "
      "examples), and the keys a query actually read are counted by the decode kernel "
      "(mean over queries, heads and layers). A budget is within tolerance when its quality "
      "is within --tolerance of the full key set's at that length; the smallest such budget "
      "(fewest keys read) is reported per length, as a fraction of the full key set and of "
      "all n keys. If the fraction falls as L grows, longer sequences tolerate more "
      "sparsity on this model.\n");
  cmd->callback([o] { run_study(*o); });
}

}  // namespace reach::cli
