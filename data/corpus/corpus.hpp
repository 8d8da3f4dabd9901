// Text corpora split by document into train and held-out sets, deterministically.
//
// Named corpora are read from where their Debian package puts them:
//   "kjv"  the King James Bible (package bible-kjv-text, decoded by bible-kjv's `bible`
//          program), 66 books = 66 documents, 4.3 MB of English.
//   "linux" the Linux 6.1 kernel source (package linux-source-6.1, not installed by default:
//          ~140 MB): every .c/.h/.rst/.txt file is a document, ~1 GB of code and docs, for GPU
//          runs of hundreds of millions of tokens. Extracted once into the cache directory.
// Any other name is a path: a text file (one document) or a folder (every regular file under
// it, recursively, is one document named by its path relative to the folder, in sorted path
// order).
//
// Split (docs/data.md):
//   kjv, linux: a document is held out when name_hash64(name) % 8 == 0 (for "kjv": 6 of 66
//     books, listed in docs/data.md); a name never moves between splits when others are added.
//   your files: `heldout_fraction` of the corpus's bytes is held out. Documents are taken in
//     name_hash64 order, whole while they fit, and the next one is split by position (its
//     tail, from a line start, is held out), so a single file is split by position too.
//   any corpus: `heldout_files` names the held-out documents exactly (the fraction is unused).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace reach::data {

struct Document {
  std::string name;
  std::string text;
};

struct SplitOptions {
  double heldout_fraction = 0.1;           // your files only; in (0, 1)
  std::vector<std::string> heldout_files;  // document names; empty = the rule above
};

// "a.txt,sub/b.txt" -> {"a.txt", "sub/b.txt"} (config key data.heldout_files); blanks are
// trimmed, empty items rejected. Throws std::invalid_argument naming the key.
SplitOptions split_options(double heldout_fraction, const std::string& heldout_files);

struct Corpus {
  std::string name;
  std::vector<Document> train;
  std::vector<Document> heldout;
};

// Throws std::runtime_error naming the corpus/path when it cannot be read or is empty, and
// std::invalid_argument naming the config key when the split cannot be made.
Corpus load_corpus(const std::string& name_or_path, const SplitOptions& split = {});

// A file (one document) or folder (each regular file under it, recursively, in sorted path
// order), whole: text that no split applies to (`reach eval --text`). Throws
// std::runtime_error naming the path when it does not exist or has no files.
std::vector<Document> read_documents(const std::string& path);

// The named corpora's rule: name_hash64(document_name) % 8 == 0.
bool is_heldout(const std::string& document_name);

// The whole file as bytes; throws std::runtime_error naming the path.
std::string read_file_bytes(const std::string& path);

// $REACH_CACHE_DIR, else $XDG_CACHE_HOME/reach, else ~/.cache/reach.
std::string corpus_cache_dir();
// A 64-bit string hash with FNV-1a's structure (per byte: xor, then multiply by the FNV prime
// 1099511628211) but the offset basis 1469598103934665603, which is FNV-1a's
// 14695981039346656037 with its last digit dropped. So it is not FNV-1a; it is kept as it is
// because the kjv split (and so the demo's numbers), token cache names and tokenizer
// fingerprints depend on it.
uint64_t name_hash64(const std::string& text);

// The 66 books of the "kjv" corpus (exposed for tests).
std::vector<Document> split_kjv_books(const std::string& bible_text);

}  // namespace reach::data
