#include "train/world.hpp"

#include <fmt/core.h>

#include <charconv>
#include <cstdlib>
#include <stdexcept>

namespace reach::train {
namespace {

// The variable as an integer in [low, high]; nullopt when it is not set.
std::optional<int64_t> integer_variable(const EnvironmentLookup& lookup, const std::string& name,
                                        int64_t low, int64_t high) {
  const auto text = lookup(name);
  if (!text) return std::nullopt;
  int64_t value = 0;
  const auto* end = text->data() + text->size();
  const auto [ptr, ec] = std::from_chars(text->data(), end, value);
  if (text->empty() || ec != std::errc() || ptr != end) {
    throw std::invalid_argument(
        fmt::format("environment variable {}='{}' is not an integer", name, *text));
  }
  if (value < low || value > high) {
    throw std::invalid_argument(
        fmt::format("environment variable {}={} must be in {}..{}", name, value, low, high));
  }
  return value;
}

}  // namespace

World world_from_environment(const EnvironmentLookup& lookup_in) {
  const EnvironmentLookup lookup =
      lookup_in ? lookup_in : [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    return value ? std::optional<std::string>(value) : std::nullopt;
  };
  constexpr int64_t kMaxWorld = 1 << 20;
  World world;
  const auto size = integer_variable(lookup, "WORLD_SIZE", 1, kMaxWorld);
  if (!size) {
    if (lookup("RANK")) {
      throw std::invalid_argument(
          "environment variable RANK is set but WORLD_SIZE is not (set both, as torchrun does, "
          "or neither for one process)");
    }
    return world;
  }
  world.size = static_cast<int>(*size);
  const auto rank = integer_variable(lookup, "RANK", 0, kMaxWorld);
  if (!rank && world.size > 1) {
    throw std::invalid_argument(fmt::format(
        "environment variable WORLD_SIZE={} but RANK is not set (each process needs its rank, "
        "0..{})",
        world.size, world.size - 1));
  }
  world.rank = static_cast<int>(rank.value_or(0));
  if (world.rank >= world.size) {
    throw std::invalid_argument(
        fmt::format("environment variable RANK={} but WORLD_SIZE={} (ranks are 0..{})", world.rank,
                    world.size, world.size - 1));
  }
  world.local_rank =
      static_cast<int>(integer_variable(lookup, "LOCAL_RANK", 0, kMaxWorld).value_or(world.rank));
  const auto addr = lookup("MASTER_ADDR");
  if (world.size == 1) {
    if (!addr || addr->empty()) return world;
    world.world_of_one_group = true;
  }
  if (!addr || addr->empty()) {
    throw std::invalid_argument(fmt::format(
        "environment variable WORLD_SIZE={} but MASTER_ADDR is not set (the host of rank 0)",
        world.size));
  }
  world.master_addr = *addr;
  const auto port = integer_variable(lookup, "MASTER_PORT", 1, 65535);
  if (!port) {
    throw std::invalid_argument(fmt::format(
        "environment variable WORLD_SIZE={} but MASTER_PORT is not set (the port rank 0 serves "
        "the rendezvous on)",
        world.size));
  }
  world.master_port = static_cast<uint16_t>(*port);
  world.launcher_serves_store = lookup("TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
  world.attempt = lookup("TORCHELASTIC_RESTART_COUNT").value_or("0");
  return world;
}

}  // namespace reach::train
