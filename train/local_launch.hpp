// `reach train --nproc N`: N ranks of one data-parallel training on this machine, each a copy of
// this program (same arguments, --nproc removed) with the environment torchrun would give it
// (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR = 127.0.0.1 and a free
// MASTER_PORT, unless those two are set). Each rank's stderr comes out line by line prefixed by
// "[rank R] ". SIGINT/SIGTERM to the launcher are passed on to every rank (they stop together
// at a checkpoint). When a rank fails (a non-zero exit other than 130, the interrupted exit, or
// death by a signal), the others get SIGTERM, then SIGKILL after kStopGraceSeconds, and the
// launcher returns 1 having named the rank.
#pragma once

#include <string>
#include <vector>

namespace reach::train {

inline constexpr int kStopGraceSeconds = 10;

// Runs `arguments` (arguments[0] is ignored: the ranks run /proc/self/exe) as `nproc` ranks
// and returns the exit status the launcher should end with (0, 130 when interrupted, 1 when a
// rank failed). Throws std::invalid_argument for nproc < 1 or when WORLD_SIZE is already set.
int launch_local_ranks(int nproc, const std::vector<std::string>& arguments);

// This process's command line (from /proc/self/cmdline), without "--nproc N" / "--nproc=N".
std::vector<std::string> command_line_without_nproc();

}  // namespace reach::train
