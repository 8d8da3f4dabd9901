// A run directory (run.out_dir) as training sees it: one training at a time (a lock), and an
// existing run is never mixed with a new one: it is continued (--resume) or removed first
// (--overwrite), never trained over.
#pragma once

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

// Refuses (std::invalid_argument naming the key, both values and the keys that may change) a
// resume whose config, as TOML, differs from the checkpoint's in a key outside `may_change`
// (model.preset, a name for the model.* values, is not compared).
void check_resume_config(const std::string& checkpoint_toml, const std::string& config_toml,
                         std::span<const char* const> may_change, const std::string& checkpoint);

}  // namespace reach::train
