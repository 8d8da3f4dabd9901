// Text corpora split by document into train and held-out sets, deterministically.
//
// Named corpora are read from where their Debian package puts them:
//   "kjv"  the King James Bible (package bible-kjv-text, decoded by bible-kjv's `bible`
//          program), 66 books = 66 documents, 4.3 MB of English.
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
uint64_t fnv1a64(const std::string& text);

// The 66 books of the "kjv" corpus (exposed for tests).
std::vector<Document> split_kjv_books(const std::string& bible_text);

}  // namespace reach::data
