// Token text: bytes for the byte tokenizer; the sentencepiece piece table read once from
// tokenizer.vocab (spaces, byte fallback, control pieces), clear errors.
#include "infer/token_text.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "io/remove_tree.hpp"

namespace reach::infer {
namespace {

TEST(TokenText, BytesAreThemselves) {
  const auto t = TokenText::load("byte", "");
  EXPECT_EQ(t.vocab_size(), 256);
  EXPECT_EQ(t.piece('A'), "A");
  EXPECT_EQ(t.piece(0xE2), std::string(1, '\xE2'));
  EXPECT_THROW(t.piece(256), std::out_of_range);
}

TEST(TokenText, SentencepiecePieces) {
  const auto dir = std::filesystem::temp_directory_path() / "reach-token-text-test";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.vocab") << "<unk>\t0\n<s>\t0\n</s>\t0\n<0x0A>\t0\n<0xE2>\t0\n"
                                            "\xE2\x96\x81the\t-1\ning\t-2\n\xE2\x96\x81\t-3\n";
  const auto t = TokenText::load("sentencepiece", dir.string());
  EXPECT_EQ(t.vocab_size(), 8);
  EXPECT_EQ(t.piece(1), "");
  EXPECT_EQ(t.piece(2), "");
  EXPECT_EQ(t.piece(3), "\n");
  EXPECT_EQ(t.piece(4), std::string(1, '\xE2'));
  EXPECT_EQ(t.piece(5), " the");
  EXPECT_EQ(t.piece(6), "ing");
  EXPECT_EQ(t.piece(7), " ");
  reach::io::remove_tree(dir);
  EXPECT_THROW(TokenText::load("sentencepiece", dir.string()), std::runtime_error);
  EXPECT_THROW(TokenText::load("wordpiece", ""), std::runtime_error);
}

}  // namespace
}  // namespace reach::infer
