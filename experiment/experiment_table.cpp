#include "experiment/experiment_table.hpp"

#include <fmt/core.h>

#include <cmath>
#include <nlohmann/json.hpp>

namespace reach::experiment {
namespace {

struct Summary {
  double mean = 0;
  double spread = 0;  // sample standard deviation; 0 for one seed
  size_t seeds = 0;
};

Summary summarise(const RunResult& run, size_t length_index) {
  Summary s;
  for (const auto& seed : run.seeds) s.mean += seed.lengths[length_index].perplexity;
  s.seeds = run.seeds.size();
  if (s.seeds == 0) return s;
  s.mean /= static_cast<double>(s.seeds);
  if (s.seeds > 1) {
    double sum = 0;
    for (const auto& seed : run.seeds) {
      const double d = seed.lengths[length_index].perplexity - s.mean;
      sum += d * d;
    }
    s.spread = std::sqrt(sum / static_cast<double>(s.seeds - 1));
  }
  return s;
}

std::string cell(const Summary& s) {
  if (s.seeds == 0) return "-";
  if (s.seeds == 1) return fmt::format("{:.2f}", s.mean);
  return fmt::format("{:.2f} +- {:.2f}", s.mean, s.spread);
}

}  // namespace

std::string markdown_table(const ExperimentSpec& spec, const ExperimentResult& result) {
  bool any_reference = false;
  for (const auto& run : result.runs) any_reference |= !run.run.reference.empty();
  std::string header = "| run | seeds | tokens trained |";
  std::string rule = "| --- | ---: | ---: |";
  for (const int64_t m : spec.multipliers) {
    header += fmt::format(" {}x |", m);
    rule += " ---: |";
  }
  if (spec.multipliers.size() > 1) {
    header += fmt::format(" {}x vs {}x |", spec.multipliers.back(), spec.multipliers.front());
    rule += " ---: |";
  }
  if (any_reference) {
    for (const int64_t m : spec.multipliers) {
      header += fmt::format(" {} {}x |", spec.reference_name, m);
      rule += " ---: |";
    }
  }
  bool any_speed = false;
  for (const auto& run : result.runs) {
    for (const auto& seed : run.seeds) any_speed |= seed.inference_tokens_per_s > 0;
  }
  if (any_speed) {
    header += " inference tokens/s |";
    rule += " ---: |";
  }
  std::string out = fmt::format("{}\n{}\n", header, rule);
  for (const auto& run : result.runs) {
    const int64_t tokens = run.seeds.empty() ? 0 : run.seeds.front().tokens_trained;
    std::string row = fmt::format("| {} | {} | {} |", run.run.name, run.seeds.size(),
                                  tokens > 0 ? fmt::format("{:.1f}M", tokens / 1e6) : "-");
    std::vector<Summary> summaries;
    for (size_t i = 0; i < spec.multipliers.size(); ++i) {
      summaries.push_back(summarise(run, i));
      row += fmt::format(" {} |", cell(summaries.back()));
    }
    if (spec.multipliers.size() > 1) {
      const auto &first = summaries.front(), &last = summaries.back();
      row +=
          first.seeds ? fmt::format(" {:+.1f}% |", 100.0 * (last.mean / first.mean - 1.0)) : " - |";
    }
    if (any_reference) {
      for (size_t i = 0; i < spec.multipliers.size(); ++i) {
        const double ref = i < run.run.reference.size() ? run.run.reference[i] : 0.0;
        row += ref > 0 ? fmt::format(" {:.2f} |", ref) : " - |";
      }
    }
    if (any_speed) {
      double speed = 0, frozen = 0;
      int timed = 0;
      for (const auto& seed : run.seeds) {
        if (seed.inference_tokens_per_s <= 0) continue;
        speed += seed.inference_tokens_per_s;
        frozen += seed.frozen_inference_tokens_per_s;
        ++timed;
      }
      if (timed == 0) {
        row += " - |";
      } else {
        row += fmt::format(" {:.0f}k", speed / timed / 1e3);
        if (frozen > 0) row += fmt::format(" (frozen {:.0f}k)", frozen / timed / 1e3);
        row += " |";
      }
    }
    out += fmt::format("{}\n", row);
  }
  out += fmt::format(
      "\n(perplexity per token on held-out text; mean +- sample standard deviation over seeds; "
      "lengths in multiples of the training length; {} predicted tokens per length{})\n",
      spec.max_tokens,
      any_speed ? "; inference tokens/s: forward passes at the training batch and length on the "
                  "training device, mean over seeds; a learned schedule also frozen to integer "
                  "offsets"
                : "");
  return out;
}

std::string csv_table(const ExperimentSpec& spec, const ExperimentResult& result) {
  std::string out =
      fmt::format("run,seed,multiplier,length,tokens,perplexity,mean_nll,tokens_trained,{}\n",
                  spec.reference_name);
  for (const auto& run : result.runs) {
    for (const auto& seed : run.seeds) {
      for (size_t i = 0; i < seed.lengths.size(); ++i) {
        const auto& l = seed.lengths[i];
        const double ref = i < run.run.reference.size() ? run.run.reference[i] : 0.0;
        out += fmt::format("{},{},{},{},{},{:.6f},{:.6f},{},{}\n", run.run.name, seed.seed,
                           spec.multipliers[i], l.length, l.tokens, l.perplexity, l.mean_nll,
                           seed.tokens_trained, ref > 0 ? fmt::format("{}", ref) : "");
      }
    }
  }
  return out;
}

std::string json_table(const ExperimentSpec& spec, const ExperimentResult& result) {
  nlohmann::json runs = nlohmann::json::array();
  for (const auto& run : result.runs) {
    nlohmann::json seeds = nlohmann::json::array();
    for (const auto& seed : run.seeds) {
      nlohmann::json lengths = nlohmann::json::array();
      for (const auto& l : seed.lengths) {
        lengths.push_back({{"length", l.length},
                           {"tokens", l.tokens},
                           {"perplexity", l.perplexity},
                           {"mean_nll", l.mean_nll},
                           {"bucket_nll", l.bucket_nll}});
      }
      seeds.push_back({{"seed", seed.seed},
                       {"directory", seed.directory},
                       {"checkpoint", seed.checkpoint},
                       {"tokens_trained", seed.tokens_trained},
                       {"parameters", seed.parameters},
                       {"device", seed.device},
                       {"inference_tokens_per_s", seed.inference_tokens_per_s},
                       {"frozen_inference_tokens_per_s", seed.frozen_inference_tokens_per_s},
                       {"lengths", lengths}});
    }
    runs.push_back({{"name", run.run.name}, {"reference", run.run.reference}, {"seeds", seeds}});
  }
  return nlohmann::json{
      {"experiment", spec.name},           {"multipliers", spec.multipliers},
      {"max_tokens", spec.max_tokens},     {"reference_name", spec.reference_name},
      {"interrupted", result.interrupted}, {"runs", runs}}
      .dump(2);
}

}  // namespace reach::experiment
