// The start of a data-parallel training: before any collective runs, every rank says, through
// the rendezvous store, what it is about to train (its world size, its config, whether it
// resumes and from which checkpoint step), and rank 0 compares each with its own. A difference
// stops every rank with one error naming the rank and what differs; a rank that failed to set
// up (rank 0 refusing the run directory, a rank that cannot load the checkpoint) stops the
// others with its error instead of leaving them waiting.
//
// Order: rank 0 sets up (run directory, checkpoint choice) and calls agree_to_start; the others
// call wait_for_rank0 (rank 0's start: its checkpoint is the one they load), set up, then call
// agree_to_start.
#pragma once

#include <cstdint>
#include <string>

#include "train/process_group.hpp"

namespace reach::train {

struct RankStart {
  int rank = 0;
  int world_size = 1;
  std::string config_toml;  // the config, per-machine keys (run.threads, data.cache_dir) left out
  bool resume = false;      // started with --resume
  int64_t checkpoint_step = 0;  // the step it starts from (0: a new run)
  std::string checkpoint;       // the checkpoint it resumes from ("" for a new run)
  std::string error;            // why this rank could not set up ("" when it could)
};

// The config keys that may differ between ranks (they describe the machine, not the run).
inline constexpr const char* kPerMachineKeys[] = {"run.threads", "data.cache_dir"};

// `config_toml` without the per-machine keys.
std::string shared_config(const std::string& config_toml);

// 64-bit FNV-1a of a config's TOML text, printed in errors to tell configs apart.
uint64_t config_hash(const std::string& toml_text);

// What differs between rank 0's start and another rank's, as one sentence ("" when nothing).
std::string start_difference(const RankStart& rank0, const RankStart& other);

// Ranks other than 0: rank 0's start; throws std::runtime_error when rank 0 failed to set up.
RankStart wait_for_rank0(ProcessGroup& group);

// Publishes this rank's start and waits for the verdict (rank 0 computes it from every rank's
// start); throws std::runtime_error naming the rank and the difference when the ranks disagree
// or one failed. A start with `error` set publishes the failure and returns at once (the caller
// rethrows its own error).
void agree_to_start(ProcessGroup& group, const RankStart& mine);

}  // namespace reach::train
