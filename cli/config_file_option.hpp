// The one way every config-taking command names its config file: `reach CMD CONFIG` or
// `reach CMD --config CONFIG` (the same option), defaults when omitted.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace reach::cli {

inline CLI::Option* add_config_file_options(CLI::App* command, std::string& path,
                                            const std::string& help) {
  return command->add_option("config,--config", path, help);
}

}  // namespace reach::cli
