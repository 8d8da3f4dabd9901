// Tokenized corpora cached on disk and memory-mapped, so a corpus is tokenized once per
// (corpus, tokenizer) pair and not on every run.
//
// <cache_dir>/<corpus-key>-<tokenizer fingerprint>.tokens : uint32 tokens, all documents
//                                                          back to back
//                                               .json   : per document name, split, offset,
//                                                          length; the key; token count
// The key is a hash of every document's name, text and split, so an edited corpus (or a new
// split) is re-tokenized.
// Default cache_dir: $REACH_CACHE_DIR, else $XDG_CACHE_HOME/reach, else ~/.cache/reach.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "data/corpus/corpus.hpp"
#include "data/tokenizer/tokenizer.hpp"

namespace reach::data {

class TokenizedCorpus {
 public:
  TokenizedCorpus(const TokenizedCorpus&) = delete;
  TokenizedCorpus& operator=(const TokenizedCorpus&) = delete;
  TokenizedCorpus(TokenizedCorpus&& other) noexcept;
  TokenizedCorpus& operator=(TokenizedCorpus&&) = delete;
  ~TokenizedCorpus();

  // Opens the cache when it matches, else tokenizes and writes it (atomically).
  // Throws std::runtime_error naming the file when a cache file is truncated or corrupt.
  static TokenizedCorpus open_or_build(const Corpus& corpus, const Tokenizer& tokenizer,
                                       const std::string& cache_dir = "");

  std::span<const uint32_t> train_stream() const { return train_; }  // train docs back to back
  const std::vector<std::span<const uint32_t>>& heldout() const { return heldout_; }
  const std::string& path() const { return path_; }
  bool built_now() const { return built_now_; }

 private:
  TokenizedCorpus() = default;
  const uint32_t* base_ = nullptr;
  size_t bytes_ = 0;
  std::span<const uint32_t> train_;
  std::vector<std::span<const uint32_t>> heldout_;
  std::string path_;
  bool built_now_ = false;
};

std::string default_cache_dir();

}  // namespace reach::data
