// A run directory (run.out_dir) as training sees it: one training at a time (a lock), and an
// existing run is never mixed with a new one: it is continued (--resume) or removed first
// (--overwrite), never trained over.
#pragma once

#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace reach::train {

// An exclusive flock on <dir>/.lock for as long as the object lives. A second training of the
// same directory (in this or another process) gets std::runtime_error naming the directory and
// the pid that holds it.
class RunLock {
 public:
  explicit RunLock(const std::string& dir);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
};

// The entries of `entries` (file or directory names) that exist in dir and are not empty.
std::vector<std::string> existing_run_entries(const std::string& dir,
                                              const std::vector<std::string>& entries);

// Deletes what a removal cut short (a kill during remove_run_entries) left behind.
void remove_unfinished_removals(const std::string& dir);

// Moves those entries into one hidden directory of dir (renames: each atomic), then deletes
// it, so that no half-deleted run is ever read as a run.
void remove_run_entries(const std::string& dir, const std::vector<std::string>& entries);

// "section.key" -> the value's TOML text, for every key of a config's TOML.
std::map<std::string, std::string> flat_config_keys(const std::string& toml_text);

// Refuses (std::invalid_argument naming the key, both values and the keys that may change) a
// resume whose config, as TOML, differs from the checkpoint's in a key outside `may_change`
// (model.preset, a name for the model.* values, is not compared).
void check_resume_config(const std::string& checkpoint_toml, const std::string& config_toml,
                         std::span<const char* const> may_change, const std::string& checkpoint);

// How a run kind names its run directory and what a run in it consists of.
struct RunDirectoryRules {
  std::string name;                  // in messages: "run.out_dir", "run directory"
  std::string log_prefix;            // starts stderr lines: "[train]", "[tasks]"
  std::vector<std::string> entries;  // what a run directory holds besides its lock
};

// What every run kind does first with its run directory: creates and locks it, deletes what a
// checkpoint write or a removal cut short left behind (saying so), and refuses a directory that
// already holds a run (std::invalid_argument naming it) unless resuming, or removes that run
// first with `overwrite`. The directory stays locked while the returned lock lives.
std::unique_ptr<RunLock> open_run_directory(const std::string& dir, const RunDirectoryRules& rules,
                                            bool resume, bool overwrite);

// The outcome of picking a checkpoint to resume from: prints each newer one skipped and throws
// std::invalid_argument when none (`chosen` empty) loads.
void report_resume_choice(const std::string& dir, const RunDirectoryRules& rules,
                          const std::string& chosen, const std::vector<std::string>& skipped);

// Deletes the newer checkpoints that did not load (training recomputes their steps), saying so.
void remove_checkpoints_after_resume_point(const RunDirectoryRules& rules,
                                           const std::string& chosen,
                                           const std::vector<std::string>& skipped_dirs);

// <dir>/metrics.jsonl opened for appending: a resumed run (resumed_step set) keeps the lines
// through that step, a new run starts it empty.
std::ofstream open_metrics(const std::string& dir, std::optional<int64_t> resumed_step);

}  // namespace reach::train
