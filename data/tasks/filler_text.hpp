// Real filler text for the retrieval tasks (needle in a haystack, variable tracking): the bytes
// of a corpus, loaded once per process and shared, from which each example takes a random
// contiguous span.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace reach::data::tasks {

// The bytes of `corpus`: "kjv" (the Debian King James Bible, as data/corpus loads it: its 66
// books joined by newlines), or the path of a text file or folder (every regular file under
// it, in sorted path order, joined by newlines). Cached per name for the life of the process
// (a task is made many times per run). Throws std::invalid_argument naming `what` (e.g.
// "needle") and the corpus when it does not exist, cannot be read or is empty.
std::shared_ptr<const std::string> load_filler_text(const std::string& corpus,
                                                    const std::string& what);

// Appends `count` bytes of `text` starting at a uniformly random offset (a contiguous span:
// count <= text.size(), checked by the caller) to `out` as tokens 0..255.
void append_filler_span(const std::string& text, int64_t count, std::mt19937_64& rng,
                        std::vector<int32_t>& out);

// Appends the bytes of `s` as tokens 0..255.
void append_bytes(const std::string& s, std::vector<int32_t>& out);

// `count` sorted offsets in [0, slots], drawn uniformly with replacement (equal offsets put
// the inserted items next to each other): O(count log count), independent of `slots`.
std::vector<int64_t> insertion_offsets(int64_t slots, int64_t count, std::mt19937_64& rng);

// Throws std::invalid_argument when the corpus holds fewer than `needed` bytes: "`what`:
// corpus 'X' has N bytes, fewer than the M bytes of filler `context`".
void require_filler(const std::string& what, const std::string& corpus, const std::string& text,
                    int64_t needed, const std::string& context);

}  // namespace reach::data::tasks
