// Budget rules: fixed counts, rules of the length n, the attention-mass cut, clear errors.
#include "infer/budget_rule.hpp"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

namespace reach::infer {
namespace {

TEST(BudgetRule, FullIsTheTrainedKeySet) {
  const auto rule = parse_budget_rule("full");
  EXPECT_TRUE(rule.is_full());
  const auto b = rule.at(1000);
  EXPECT_FALSE(b.window || b.rungs || b.mass);
}

TEST(BudgetRule, FixedCounts) {
  const auto b = parse_budget_rule("window=16, rungs=4").at(123456);
  EXPECT_EQ(b.window, 16);
  EXPECT_EQ(b.rungs, 4);
  EXPECT_FALSE(b.mass);
}

TEST(BudgetRule, RulesOfTheLength) {
  const auto rungs = parse_budget_rule("rungs=2*log2(n)");
  EXPECT_EQ(rungs.at(8).rungs, 6);
  EXPECT_EQ(rungs.at(1024).rungs, 20);
  EXPECT_EQ(rungs.at(1000).rungs, 20);  // 19.93 rounded up
  EXPECT_EQ(rungs.at(1).rungs, 0);
  const auto both = parse_budget_rule("window=0.05*n,rungs=sqrt(n)");
  EXPECT_EQ(both.at(1000).window, 50);
  EXPECT_EQ(both.at(100).rungs, 10);
  EXPECT_EQ(both.at(3).window, 1);                            // ceil(0.15)
  EXPECT_EQ(parse_budget_rule("window=0").at(50).window, 1);  // clamped: a query reads itself
}

TEST(BudgetRule, MassIsDynamic) {
  const auto b = parse_budget_rule("rungs=3,mass=0.9").at(10);
  EXPECT_EQ(b.rungs, 3);
  EXPECT_DOUBLE_EQ(*b.mass, 0.9);
}

TEST(BudgetRule, ChunksForTheChunkFamily) {
  const auto rule = parse_budget_rule("chunks=log2(n)");
  EXPECT_FALSE(rule.is_full());
  EXPECT_EQ(rule.at(1024).chunks, 10);
  EXPECT_EQ(rule.at(1).chunks, 1);  // clamped: a query reads at least one chunk
  EXPECT_EQ(parse_budget_rule("window=8,chunks=2").at(99).chunks, 2);
  EXPECT_FALSE(parse_budget_rule("rungs=2").at(99).chunks);
}

TEST(BudgetRule, ChunksAsARuleOfTheCandidatesAndChunkMass) {
  // A rule of c is not resolved at n: each query's candidate count C decides.
  const auto quarter = parse_budget_rule("chunks=0.25*c").at(4096);
  EXPECT_FALSE(quarter.chunks);
  ASSERT_TRUE(quarter.chunk_rule);
  EXPECT_TRUE(quarter.chunk_rule->of_candidates);
  EXPECT_EQ(quarter.chunk_rule->kind, LengthRule::Kind::linear);
  EXPECT_DOUBLE_EQ(quarter.chunk_rule->coefficient, 0.25);
  EXPECT_EQ(parse_budget_rule("chunks=sqrt(c)").at(9).chunk_rule->kind, LengthRule::Kind::sqrt);
  const auto lg = parse_budget_rule("chunks=2*log2(c)").at(9).chunk_rule;
  EXPECT_EQ(lg->kind, LengthRule::Kind::log2);
  EXPECT_DOUBLE_EQ(lg->coefficient, 2.0);
  EXPECT_TRUE(parse_budget_rule("chunks=c").at(9).chunk_rule);
  // Rules of n are still resolved at n.
  EXPECT_FALSE(parse_budget_rule("chunks=sqrt(n)").at(16).chunk_rule);
  EXPECT_EQ(parse_budget_rule("chunks=sqrt(n)").at(16).chunks, 4);
  const auto dyn = parse_budget_rule("chunk_mass=0.8,chunks=3");
  EXPECT_TRUE(dyn.is_dynamic());
  EXPECT_FALSE(dyn.is_full());
  EXPECT_DOUBLE_EQ(*dyn.at(10).chunk_mass, 0.8);
  EXPECT_EQ(dyn.at(10).chunks, 3);
  EXPECT_FALSE(dyn.at(10).mass);
  EXPECT_FALSE(parse_budget_rule("chunks=2").is_dynamic());
}

TEST(BudgetRule, BadRulesAreClearErrors) {
  auto expect_error = [](const std::string& text, const std::string& fragment) {
    try {
      parse_budget_rule(text);
      ADD_FAILURE() << "no error for '" << text << "', expected: " << fragment;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_error("", "empty budget");
  expect_error("rungs", "expected key=value");
  expect_error("colour=3", "unknown key 'colour'");
  expect_error("rungs=lots", "'lots' is not a number");
  expect_error("rungs=2*exp(n)", "'exp(n)' is not one of n, sqrt(n), log2(n)");
  expect_error("rungs=-1", "a count must be >= 0");
  expect_error("mass=1.5", "mass must be in (0, 1]");
  expect_error("chunks=2,chunks=3", "chunks given twice");
  expect_error("mass=0", "mass must be in (0, 1]");
  expect_error("window=4,window=8", "window given twice");
  expect_error("chunks=1.5*c", "a fraction of the candidates c must be in (0, 1]");
  expect_error("chunks=0*sqrt(c)", "the coefficient of a rule of c must be > 0");
  expect_error("rungs=sqrt(c)", "'sqrt(c)' is not one of n, sqrt(n), log2(n)");
  expect_error("chunks=exp(c)", "is not one of n, sqrt(n), log2(n), c, sqrt(c), log2(c)");
  expect_error("chunk_mass=0", "chunk_mass must be in (0, 1]");
  expect_error("chunk_mass=0.5,chunk_mass=0.6", "chunk_mass given twice");
}

}  // namespace
}  // namespace reach::infer
