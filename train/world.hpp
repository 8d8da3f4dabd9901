// The processes of one data-parallel training (its "world"), as the launcher describes them in
// environment variables, torchrun's names: RANK (this process, 0..WORLD_SIZE-1), WORLD_SIZE,
// LOCAL_RANK (this process on its machine: the GPU it uses), MASTER_ADDR and MASTER_PORT (where
// rank 0 serves the rendezvous store). No WORLD_SIZE, or WORLD_SIZE=1 without MASTER_ADDR, is one
// process alone; WORLD_SIZE=1 with MASTER_ADDR (what `torchrun --nproc-per-node 1` sets) is a
// world of one with a real process group, as in PyTorch: its all-reduce is the identity, so it
// trains exactly as one process does and measures what the collectives cost.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace reach::train {

struct World {
  int rank = 0;
  int size = 1;
  int local_rank = 0;
  std::string master_addr;
  uint16_t master_port = 0;
  // torchrun's agent serves the store itself (TORCHELASTIC_USE_AGENT_STORE=True) and counts
  // restarts (TORCHELASTIC_RESTART_COUNT): rank 0 then connects as a client, and each attempt
  // uses keys of its own.
  bool launcher_serves_store = false;
  std::string attempt = "0";
  // A process group even for one rank (WORLD_SIZE=1 with MASTER_ADDR set).
  bool world_of_one_group = false;
  bool distributed() const { return size > 1 || world_of_one_group; }
};

// Reads the world from a lookup of environment variables (std::getenv by default); throws
// std::invalid_argument naming the variable and the rule it breaks (RANK without WORLD_SIZE,
// a rank outside 0..WORLD_SIZE-1, a missing MASTER_ADDR or MASTER_PORT, a non-number).
using EnvironmentLookup = std::function<std::optional<std::string>(const std::string& name)>;
World world_from_environment(const EnvironmentLookup& lookup = {});

}  // namespace reach::train
