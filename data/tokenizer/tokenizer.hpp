// Tokenizers: byte-level (vocabulary 256, the default) and sentencepiece BPE trained on a
// corpus. A tokenizer saves itself into a directory (tokenizer.json, plus tokenizer.model for
// sentencepiece) that checkpoints carry, so a checkpoint is self-describing.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data/corpus/corpus.hpp"

namespace reach::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string kind() const = 0;  // "byte" or "sentencepiece"
  virtual int64_t vocab_size() const = 0;
  virtual std::vector<uint32_t> encode(const std::string& text) const = 0;
  // The encodings of many texts, each exactly encode(text): a corpus in a few calls rather
  // than one per document (sentencepiece runs out of process: one process per batch of
  // documents, several at once, instead of one per document).
  virtual std::vector<std::vector<uint32_t>> encode_many(
      const std::vector<std::string_view>& texts) const;
  virtual std::string decode(const std::vector<uint32_t>& ids) const = 0;
  // The piece an id stands for, readable: a byte as itself when printable ASCII, else
  // <0xNN>; a sentencepiece piece as in its vocabulary ("\u2581" marks a space).
  virtual std::string piece(uint32_t id) const = 0;
  // For each id, the bytes of text it stands for (byte pieces 1, "\u2581" 1, control 0): the
  // denominator of bits per byte.
  virtual std::vector<int64_t> token_bytes() const = 0;
  // Identifies the exact vocabulary (used to key token caches).
  virtual std::string fingerprint() const = 0;
  // Writes tokenizer.json (and tokenizer.model) into an existing directory.
  virtual void save(const std::string& dir) const = 0;
};

std::unique_ptr<Tokenizer> make_byte_tokenizer();

// "byte", or a directory holding tokenizer.json (as written by save / train_sentencepiece).
// Throws std::runtime_error naming the problem.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec);

// Trains a sentencepiece BPE model on the corpus's training documents and saves it to out_dir.
// vocab_size: at least kMinSentencepieceVocab (256 byte pieces, <unk>, <s>, </s> and one
// merge); at most what the corpus supports, which spm_train computes: when it is exceeded the
// error says the largest size it accepts.
inline constexpr int64_t kMinSentencepieceVocab = 260;
std::unique_ptr<Tokenizer> train_sentencepiece(const Corpus& corpus, int64_t vocab_size,
                                               const std::string& out_dir);

}  // namespace reach::data
