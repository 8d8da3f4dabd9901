#include "train/rank_agreement.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "train/run_directory.hpp"

namespace reach::train {
namespace {

const std::string kVerdictKey = "start/verdict";
std::string start_key(int rank) { return fmt::format("start/{}", rank); }

std::string to_json(const RankStart& s) {
  return nlohmann::json{
      {"rank", s.rank},     {"world_size", s.world_size},           {"config", s.config_toml},
      {"resume", s.resume}, {"checkpoint_step", s.checkpoint_step}, {"checkpoint", s.checkpoint},
      {"error", s.error}}
      .dump();
}

RankStart from_json(const std::string& text) {
  const auto j = nlohmann::json::parse(text);
  RankStart s;
  s.rank = j.at("rank").get<int>();
  s.world_size = j.at("world_size").get<int>();
  s.config_toml = j.at("config").get<std::string>();
  s.resume = j.at("resume").get<bool>();
  s.checkpoint_step = j.at("checkpoint_step").get<int64_t>();
  s.checkpoint = j.at("checkpoint").get<std::string>();
  s.error = j.at("error").get<std::string>();
  return s;
}

}  // namespace

std::string shared_config(const std::string& config_toml) {
  std::string out, section, line;
  std::istringstream in(config_toml);
  while (std::getline(in, line)) {
    if (line.starts_with("[")) section = line.substr(1, line.find(']') - 1);
    const auto eq = line.find('=');
    if (eq != std::string::npos && !line.starts_with("#")) {
      std::string key = line.substr(0, eq);
      key.erase(key.find_last_not_of(" \t") + 1);
      const std::string name = section + "." + key;
      if (std::find_if(std::begin(kPerMachineKeys), std::end(kPerMachineKeys),
                       [&](const char* k) { return name == k; }) != std::end(kPerMachineKeys)) {
        continue;
      }
    }
    out += line + "\n";
  }
  return out;
}

uint64_t config_hash(const std::string& text) {
  uint64_t h = 14695981039346656037ull;
  for (const unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string start_difference(const RankStart& a, const RankStart& b) {
  if (a.world_size != b.world_size) {
    return fmt::format("rank {} has WORLD_SIZE={} but rank {} has WORLD_SIZE={}", b.rank,
                       b.world_size, a.rank, a.world_size);
  }
  if (a.config_toml != b.config_toml) {
    const auto x = flat_config_keys(a.config_toml), y = flat_config_keys(b.config_toml);
    std::map<std::string, std::string> all = x;
    all.insert(y.begin(), y.end());
    std::string key, va, vb;
    for (const auto& [k, unused] : all) {
      const auto i = x.find(k), j = y.find(k);
      va = i == x.end() ? "(absent)" : i->second;
      vb = j == y.end() ? "(absent)" : j->second;
      if (va != vb) {
        key = k;
        break;
      }
    }
    return fmt::format(
        "rank {}'s config differs from rank {}'s (config hash {:016x} vs {:016x}): {} is {} on "
        "rank {} but {} on rank {}",
        b.rank, a.rank, config_hash(b.config_toml), config_hash(a.config_toml),
        key.empty() ? "the text" : "key '" + key + "'", vb, b.rank, va, a.rank);
  }
  if (a.resume != b.resume) {
    return fmt::format("rank {} was started {} --resume but rank {} {} it", b.rank,
                       b.resume ? "with" : "without", a.rank, a.resume ? "with" : "without");
  }
  if (a.checkpoint_step != b.checkpoint_step) {
    return fmt::format("rank {} starts from checkpoint step {} ({}) but rank {} from step {} ({})",
                       b.rank, b.checkpoint_step, b.checkpoint.empty() ? "new run" : b.checkpoint,
                       a.rank, a.checkpoint_step, a.checkpoint.empty() ? "new run" : a.checkpoint);
  }
  return "";
}

RankStart wait_for_rank0(ProcessGroup& group) {
  RankStart rank0 = from_json(group.get(start_key(0)));
  if (!rank0.error.empty()) {
    throw std::runtime_error("rank 0 could not start: " + rank0.error);
  }
  return rank0;
}

void agree_to_start(ProcessGroup& group, const RankStart& mine) {
  group.set(start_key(mine.rank), to_json(mine));
  if (!mine.error.empty()) return;
  if (mine.rank != 0) {
    const std::string verdict = group.get(kVerdictKey);
    if (!verdict.empty()) throw std::runtime_error(verdict);
    return;
  }
  std::string verdict;
  for (int r = 1; r < mine.world_size && verdict.empty(); ++r) {
    const RankStart other = from_json(group.get(start_key(r)));
    if (!other.error.empty()) {
      verdict = fmt::format("rank {} could not start: {}", r, other.error);
    } else if (const auto difference = start_difference(mine, other); !difference.empty()) {
      verdict = "the ranks disagree, none trains: " + difference;
    }
  }
  group.set(kVerdictKey, verdict);
  if (!verdict.empty()) throw std::runtime_error(verdict);
}

}  // namespace reach::train
