#include "infer/token_text.hpp"

#include <fstream>
#include <stdexcept>

namespace reach::infer {
namespace {

// sentencepiece's word-boundary marker, U+2581.
constexpr const char* kSpaceMarker = "\xE2\x96\x81";

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

std::string piece_text(const std::string& piece) {
  // Byte fallback: <0xAB>.
  if (piece.size() == 6 && piece.rfind("<0x", 0) == 0 && piece.back() == '>') {
    const int hi = hex_digit(piece[3]), lo = hex_digit(piece[4]);
    if (hi >= 0 && lo >= 0) return std::string(1, static_cast<char>(hi * 16 + lo));
  }
  // Control pieces print nothing; unknown prints as spm_decode does.
  if (piece == "<s>" || piece == "</s>" || piece == "<pad>") return {};
  if (piece == "<unk>") return " \xE2\x81\x87 ";
  std::string text;
  for (size_t i = 0; i < piece.size();) {
    if (piece.compare(i, 3, kSpaceMarker) == 0) {
      text += ' ';
      i += 3;
    } else {
      text += piece[i++];
    }
  }
  return text;
}

}  // namespace

TokenText TokenText::load(const std::string& kind, const std::string& dir) {
  TokenText t;
  if (kind == "byte") {
    for (int b = 0; b < 256; ++b) t.pieces_.emplace_back(1, static_cast<char>(b));
    return t;
  }
  if (kind != "sentencepiece") {
    throw std::runtime_error("no token text for tokenizer kind '" + kind + "'");
  }
  const std::string path = dir + "/tokenizer.vocab";
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path + " (the sentencepiece piece table)");
  std::string line;
  while (std::getline(in, line)) {
    const auto tab = line.find('\t');
    t.pieces_.push_back(piece_text(line.substr(0, tab)));
  }
  if (t.pieces_.empty()) throw std::runtime_error(path + " is empty");
  return t;
}

const std::string& TokenText::piece(int64_t id) const {
  if (id < 0 || id >= vocab_size()) {
    throw std::out_of_range("token id " + std::to_string(id) + " outside the vocabulary (" +
                            std::to_string(vocab_size()) + ")");
  }
  return pieces_[static_cast<size_t>(id)];
}

}  // namespace reach::infer
