#include "train/run_directory.hpp"

#include <fcntl.h>
#include <fmt/core.h>
#include <sys/file.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

#include "io/remove_tree.hpp"
#include "train/checkpoint.hpp"
#include "train/loop.hpp"

namespace reach::train {
namespace fs = std::filesystem;
namespace {

constexpr const char* kRemovingPrefix = ".removing-";

}  // namespace

// "section.key" -> the value's TOML text, for every key of a config's TOML.
std::map<std::string, std::string> flat_config_keys(const std::string& toml_text) {
  std::map<std::string, std::string> keys;
  const auto table = toml::parse(toml_text);
  for (const auto& [section, node] : table) {
    const auto* sub = node.as_table();
    if (!sub) continue;
    for (const auto& [name, value] : *sub) {
      std::ostringstream text;
      value.visit([&](const auto& v) { text << v; });
      keys[std::string(section.str()) + "." + std::string(name.str())] = text.str();
    }
  }
  return keys;
}

void remove_unfinished_removals(const std::string& path) {
  const fs::path dir(path);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  std::vector<fs::path> leftovers;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().filename().string().starts_with(kRemovingPrefix)) {
      leftovers.push_back(entry.path());
    }
  }
  for (const auto& p : leftovers) reach::io::remove_tree(p);
}

RunLock::RunLock(const std::string& dir) {
  const fs::path path = fs::path(dir) / ".lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    throw std::runtime_error("cannot open the run lock '" + path.string() +
                             "': " + std::strerror(errno));
  }
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    std::string holder;
    std::ifstream(path) >> holder;
    ::close(fd_);
    fd_ = -1;
    if (error == EWOULDBLOCK) {
      throw std::runtime_error("run.out_dir '" + dir + "' is in use by another training" +
                               (holder.empty() ? "" : " (pid " + holder + ")") + "; lock " +
                               path.string());
    }
    throw std::runtime_error("cannot lock '" + path.string() + "': " + std::strerror(error));
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 ||
      ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    // The pid is only for the message of a second training; the lock itself holds.
  }
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

std::vector<std::string> existing_run_entries(const std::string& dir,
                                              const std::vector<std::string>& entries) {
  std::vector<std::string> found;
  for (const auto& name : entries) {
    const fs::path p = fs::path(dir) / name;
    std::error_code ec;
    if (fs::is_directory(p, ec) ? !fs::is_empty(p, ec) : fs::exists(p, ec)) {
      if (!fs::is_regular_file(p, ec) || fs::file_size(p, ec) > 0) found.push_back(name);
    }
  }
  return found;
}

void remove_run_entries(const std::string& dir, const std::vector<std::string>& entries) {
  const fs::path root(dir);
  remove_unfinished_removals(dir);
  const fs::path trash = root / (kRemovingPrefix + std::to_string(::getpid()));
  fs::create_directories(trash);
  for (const auto& name : entries) {
    std::error_code ec;
    if (fs::exists(root / name, ec)) fs::rename(root / name, trash / name);
  }
  reach::io::remove_tree(trash);
}

void check_resume_config(const std::string& checkpoint_toml, const std::string& config_toml,
                         std::span<const char* const> may_change, const std::string& checkpoint) {
  const auto was = flat_config_keys(checkpoint_toml), now = flat_config_keys(config_toml);
  std::map<std::string, std::string> all = was;
  all.insert(now.begin(), now.end());
  for (const auto& [key, unused] : all) {
    if (key == "model.preset" ||
        std::find(may_change.begin(), may_change.end(), key) != may_change.end()) {
      continue;
    }
    const auto a = was.find(key), b = now.find(key);
    const std::string old_value = a == was.end() ? "(absent)" : a->second;
    const std::string new_value = b == now.end() ? "(absent)" : b->second;
    if (old_value == new_value) continue;
    std::string allowed;
    for (const char* k : may_change) allowed += (allowed.empty() ? "" : ", ") + std::string(k);
    throw std::invalid_argument(fmt::format(
        "--resume: config key '{}' is {} but the checkpoint {} was trained with {}; the weights "
        "or the data stream depend on it (keys that may change on resume: {})",
        key, new_value, checkpoint, old_value, allowed));
  }
}

std::unique_ptr<RunLock> open_run_directory(const std::string& dir, const RunDirectoryRules& rules,
                                            bool resume, bool overwrite) {
  fs::create_directories(dir);
  auto lock = std::make_unique<RunLock>(dir);
  remove_unfinished_removals(dir);
  for (const auto& partial : remove_partial_checkpoints(dir)) {
    fmt::print(stderr, "{} removed {} (left by a checkpoint write or removal that was cut short)\n",
               rules.log_prefix, partial);
  }
  const auto existing = existing_run_entries(dir, rules.entries);
  if (!resume && !existing.empty()) {
    if (!overwrite) {
      std::string what;
      for (const auto& e : existing) what += (what.empty() ? "" : ", ") + e;
      throw std::invalid_argument(
          fmt::format("{} '{}' already holds a run ({}); continue it with --resume, or start "
                      "over with --overwrite (deletes it)",
                      rules.name, dir, what));
    }
    remove_run_entries(dir, existing);
    fmt::print(stderr, "{} --overwrite: removed the previous run in {}\n", rules.log_prefix, dir);
  }
  return lock;
}

void report_resume_choice(const std::string& dir, const RunDirectoryRules& rules,
                          const std::string& chosen, const std::vector<std::string>& skipped) {
  for (const auto& s : skipped)
    fmt::print(stderr, "{} skipping checkpoint {}\n", rules.log_prefix, s);
  if (chosen.empty()) {
    throw std::invalid_argument(
        fmt::format("--resume: {} '{}' holds no checkpoint {}to resume from", rules.name, dir,
                    skipped.empty() ? "" : "that loads "));
  }
}

void remove_checkpoints_after_resume_point(const RunDirectoryRules& rules,
                                           const std::string& chosen,
                                           const std::vector<std::string>& skipped_dirs) {
  if (skipped_dirs.empty()) return;
  remove_unloadable_checkpoints(skipped_dirs);
  fmt::print(stderr,
             "{} resuming from the newest valid checkpoint, {} (removed the {} newer one(s) that "
             "do not load)\n",
             rules.log_prefix, chosen, skipped_dirs.size());
}

std::ofstream open_metrics(const std::string& dir, std::optional<int64_t> resumed_step) {
  const fs::path path = fs::path(dir) / "metrics.jsonl";
  if (resumed_step) {
    keep_metrics_through(path.string(), *resumed_step);
  } else {
    std::ofstream(path, std::ios::trunc);
  }
  return std::ofstream(path, std::ios::app);
}

}  // namespace reach::train
