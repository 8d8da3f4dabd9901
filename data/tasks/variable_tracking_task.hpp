// Variable tracking over real text (RULER's vt): `chains` chains of assignments
//   VAR X0 = 12345,  VAR X1 = X0,  ...,  VAR X<hops> = X<hops-1>
// spread at random depths (each chain in order, the chains interleaved at random) through a
// random contiguous span of a corpus's bytes; then, for every chain in random order, a query
// naming the chain's LAST variable, and the model must produce the value the chain started
// from (so each answer needs `hops` hops back through the text). Of RULER's two query forms
// (list every variable equal to the value; the value of a variable) this is the second: its
// answer has a fixed length and is scored by exact match like the other tasks.
//
// Tokens: 0..255 the bytes, then 256 bos, 257 statement start, 258 statement end, 259 query,
// 260 answer, 261 eos (262 in all). An example of length L:
//
//   bos | filler bytes with the statements inserted | (query NAME answer VALUE) x chains | eos
//   a statement: 257 "VAR " NAME " = " (VALUE or NAME) 258
//
// NAME: 5 uppercase letters, distinct within the example; VALUE: `digits` digits, distinct
// between the chains; drawn per example. Statements sit between special tokens, which bytes
// never are, so the filler cannot hold a statement by accident. O(L) time and memory.
#pragma once

#include <memory>
#include <string>

#include "data/tasks/synthetic_task.hpp"

namespace reach::data::tasks {

struct VariableTrackingSpec {
  int32_t chains = 2;
  int32_t hops = 2;            // assignments after the first, per chain
  int32_t digits = 5;          // value digits
  std::string corpus = "kjv";  // "kjv", or a text file or folder (filler_text.hpp)
};

// Throws std::invalid_argument naming the problem: chains, hops or digits < 1, more chains
// than distinct values of `digits` digits, a corpus that does not exist, cannot be read or is
// too short (fewer bytes than the filler of min_length()).
std::unique_ptr<SyntheticTask> make_variable_tracking(const VariableTrackingSpec& spec);

}  // namespace reach::data::tasks
