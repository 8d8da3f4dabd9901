#include "infer/budget_rule.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace reach::infer {
namespace {

[[noreturn]] void fail(const std::string& part, const std::string& why) {
  throw std::invalid_argument(
      "budget part '" + part + "': " + why +
      " (expected e.g. full, window=16, rungs=2*log2(n), mass=0.9, chunks=2, chunks=sqrt(c), "
      "chunk_mass=0.9)");
}

double parse_number(const std::string& text, const std::string& part) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    fail(part, "'" + text + "' is not a number");
  }
  if (used != text.size() || !std::isfinite(value)) fail(part, "'" + text + "' is not a number");
  return value;
}

// c, c*n, c*sqrt(n), c*log2(n); with candidates allowed (chunks), also c*c, sqrt(c), log2(c)
// and a fraction f*c of the candidates.
LengthRule parse_length_rule(const std::string& expression, const std::string& part,
                             bool candidates_allowed = false) {
  LengthRule rule;
  std::string function = expression;
  rule.coefficient = 1.0;
  const auto star = expression.find('*');
  if (star != std::string::npos) {
    rule.coefficient = parse_number(expression.substr(0, star), part);
    function = expression.substr(star + 1);
  }
  const auto is = [&](const char* of_n, const char* of_c) {
    if (function == of_n) return true;
    if (candidates_allowed && function == of_c) {
      rule.of_candidates = true;
      return true;
    }
    return false;
  };
  if (is("n", "c")) {
    rule.kind = LengthRule::Kind::linear;
  } else if (is("sqrt(n)", "sqrt(c)")) {
    rule.kind = LengthRule::Kind::sqrt;
  } else if (is("log2(n)", "log2(c)")) {
    rule.kind = LengthRule::Kind::log2;
  } else if (star == std::string::npos) {
    rule.kind = LengthRule::Kind::constant;
    if (function.find_first_of("nc(") != std::string::npos) {
      fail(part, "'" + function + "' is not one of n, sqrt(n), log2(n)" +
                     (candidates_allowed ? std::string(", c, sqrt(c), log2(c)") : std::string()));
    }
    rule.coefficient = parse_number(function, part);
    if (rule.coefficient < 0) fail(part, "a count must be >= 0");
    return rule;
  } else {
    fail(part, "'" + function + "' is not one of n, sqrt(n), log2(n)" +
                   (candidates_allowed ? std::string(", c, sqrt(c), log2(c)") : std::string()));
  }
  if (rule.coefficient < 0) fail(part, "the coefficient must be >= 0");
  if (rule.of_candidates) {
    if (!(rule.coefficient > 0)) fail(part, "the coefficient of a rule of c must be > 0");
    if (rule.kind == LengthRule::Kind::linear && rule.coefficient > 1) {
      fail(part, "a fraction of the candidates c must be in (0, 1]");
    }
  }
  return rule;
}

}  // namespace

int64_t LengthRule::at(int64_t n) const {
  const double x = static_cast<double>(std::max<int64_t>(n, 1));
  double value = coefficient;
  switch (kind) {
    case Kind::constant:
      break;
    case Kind::linear:
      value *= x;
      break;
    case Kind::sqrt:
      value *= std::sqrt(x);
      break;
    case Kind::log2:
      value *= std::log2(x);
      break;
  }
  // A tiny tolerance, so 2 * log2(8) is 6 and not 7 from rounding.
  return static_cast<int64_t>(std::ceil(value - 1e-9));
}

ResolvedBudget BudgetRule::at(int64_t n) const {
  ResolvedBudget b;
  if (window) b.window = std::max<int64_t>(window->at(n), 1);
  if (rungs) b.rungs = std::max<int64_t>(rungs->at(n), 0);
  if (chunks && chunks->of_candidates) {
    b.chunk_rule = chunks;
  } else if (chunks) {
    b.chunks = std::max<int64_t>(chunks->at(n), 1);
  }
  b.mass = mass;
  b.chunk_mass = chunk_mass;
  return b;
}

BudgetRule parse_budget_rule(const std::string& text) {
  BudgetRule rule;
  rule.text = text;
  std::string spaceless;
  for (char c : text) {
    if (c != ' ') spaceless += c;
  }
  if (spaceless.empty()) fail(text, "empty budget");
  if (spaceless == "full") return rule;
  std::istringstream parts(spaceless);
  std::string part;
  while (std::getline(parts, part, ',')) {
    const auto eq = part.find('=');
    if (eq == std::string::npos) fail(part, "expected key=value");
    const std::string key = part.substr(0, eq), value = part.substr(eq + 1);
    if (key == "window") {
      if (rule.window) fail(part, "window given twice");
      rule.window = parse_length_rule(value, part);
    } else if (key == "rungs") {
      if (rule.rungs) fail(part, "rungs given twice");
      rule.rungs = parse_length_rule(value, part);
    } else if (key == "chunks") {
      if (rule.chunks) fail(part, "chunks given twice");
      rule.chunks = parse_length_rule(value, part, true);
    } else if (key == "mass" || key == "chunk_mass") {
      auto& target = key == "mass" ? rule.mass : rule.chunk_mass;
      if (target) fail(part, key + " given twice");
      const double p = parse_number(value, part);
      if (!(p > 0.0 && p <= 1.0)) fail(part, key + " must be in (0, 1]");
      target = p;
    } else {
      fail(part, "unknown key '" + key + "' (window, rungs, mass, chunks or chunk_mass)");
    }
  }
  return rule;
}

}  // namespace reach::infer
