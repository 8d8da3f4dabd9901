// CLI11 validators with short, readable messages.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace reach::cli {

// Accepts a number > 0 (integer or real); the message names the rule, not a huge range.
inline CLI::Validator positive() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(text, value)) return "'" + text + "' is not a number";
        if (!(value > 0)) return "must be > 0, got " + text;
        return {};
      },
      "POSITIVE", "positive");
}

}  // namespace reach::cli
