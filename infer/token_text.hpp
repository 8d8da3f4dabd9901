// Text of generated tokens, one token at a time, without a process per token: bytes for the
// byte tokenizer; for sentencepiece, the piece table read once from the tokenizer's
// tokenizer.vocab (its pieces in id order), "▁" as a space and byte-fallback pieces <0xAB>
// as their byte. Streaming output appends each token's text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace reach::infer {

class TokenText {
 public:
  // kind "byte" (dir unused) or "sentencepiece" (dir holds tokenizer.vocab). Throws
  // std::runtime_error naming the file or the kind.
  static TokenText load(const std::string& kind, const std::string& dir);

  int64_t vocab_size() const { return static_cast<int64_t>(pieces_.size()); }
  // The bytes token `id` adds to the text; throws std::out_of_range outside the vocabulary.
  const std::string& piece(int64_t id) const;

 private:
  std::vector<std::string> pieces_;
};

}  // namespace reach::infer
