// Multi-query needle in a haystack over real text (RULER's niah_multikey / multiquery style):
// `needles` sentences "the special magic number for KEY is: VALUE" at random depths in a
// random contiguous span of a corpus's bytes, then `queries` of the keys, each followed by
// its value, which the model must produce.
//
// Tokens: 0..255 the bytes (filler, needle text, keys, digits), then 256 bos, 257 needle
// start, 258 needle end, 259 query, 260 answer, 261 eos (262 in all). An example of length L:
//
//   bos | filler bytes with the needles inserted | (query KEY answer VALUE) x queries | eos
//   a needle: 257 "the special magic number for " KEY " is: " VALUE 258
//
// KEY: 4 lowercase letters, distinct within an example; VALUE: `digits` decimal digits; both
// drawn per example. Each needle sits between two special tokens, which bytes never are, so
// the filler cannot contain a needle by accident (the key's letters and the digits may occur
// in the filler: they are distractors, not needles). Needles go in at uniformly random byte
// offsets of the filler (not aligned to words), in random order; the queries ask distinct
// keys, in random order. Each query is one answer (its `digits` value tokens, predicted from
// the answer marker on): exact match per answer. The filler is L minus the fixed tokens, one
// span of the corpus, so an example costs O(L) time and memory.
#pragma once

#include <memory>
#include <string>

#include "data/tasks/synthetic_task.hpp"

namespace reach::data::tasks {

struct NeedleSpec {
  int32_t needles = 4;
  int32_t queries = 4;         // <= needles
  int32_t digits = 5;          // value digits
  std::string corpus = "kjv";  // "kjv", or a text file or folder (filler_text.hpp)
};

// Throws std::invalid_argument naming the problem: needles or digits < 1, queries outside
// 1..needles, a corpus that does not exist, cannot be read or is too short (fewer bytes than
// the filler of min_length()).
std::unique_ptr<SyntheticTask> make_needle(const NeedleSpec& spec);

}  // namespace reach::data::tasks
