// Text corpora split by document into train and held-out sets, deterministically.
//
// Named corpora are read from where their Debian package puts them:
//   "kjv"  the King James Bible (package bible-kjv-text, decoded by bible-kjv's `bible`
//          program), 66 books = 66 documents, 4.3 MB of English.
//   "linux" the Linux 6.1 kernel source (package linux-source-6.1, not installed by default:
//          ~140 MB): every .c/.h/.rst/.txt file is a document, ~1 GB of code and docs, for GPU
//          runs of hundreds of millions of tokens. Extracted once into the cache directory.
// Any other name is a path: a text file (one document) or a folder (every regular file under
// it, recursively, is one document, in sorted path order).
// Split: a document is held out when fnv1a64(name) % 8 == 0 (for "kjv": 9 of 66 books,
// listed in docs/data.md). A name never moves between splits when others are added.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace reach::data {

struct Document {
  std::string name;
  std::string text;
};

struct Corpus {
  std::string name;
  std::vector<Document> train;
  std::vector<Document> heldout;
};

// Throws std::runtime_error naming the corpus/path when it cannot be read or is empty.
Corpus load_corpus(const std::string& name_or_path);

bool is_heldout(const std::string& document_name);

// $REACH_CACHE_DIR, else $XDG_CACHE_HOME/reach, else ~/.cache/reach.
std::string corpus_cache_dir();
uint64_t fnv1a64(const std::string& text);

// The 66 books of the "kjv" corpus (exposed for tests).
std::vector<Document> split_kjv_books(const std::string& bible_text);

}  // namespace reach::data
