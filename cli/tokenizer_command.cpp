// `reach tokenizer train --corpus NAME --vocab-size N --out DIR` and
// `reach tokenizer encode --tokenizer DIR TEXT` (to look at what it does).
#include <fmt/core.h>
#include <fmt/ranges.h>

#include <memory>

#include "cli/commands.hpp"
#include "cli/validators.hpp"
#include "data/tokenizer/tokenizer.hpp"

namespace reach::cli {
namespace {

struct TokenizerOptions {
  std::string corpus = "kjv";
  int64_t vocab_size = 4096;
  std::string out;
  std::string tokenizer = "byte";
  std::string text;
};

}  // namespace

void add_tokenizer_command(CLI::App& app) {
  auto o = std::make_shared<TokenizerOptions>();
  auto* cmd = app.add_subcommand("tokenizer", "Train or try a tokenizer");
  cmd->require_subcommand(1);
  auto* train = cmd->add_subcommand("train", "Train a sentencepiece BPE tokenizer on a corpus");
  train->add_option("--corpus", o->corpus, "Corpus name (kjv) or path to text file/folder");
  train->add_option("--vocab-size", o->vocab_size, "Vocabulary size (>= 260)")
      ->check(CLI::Range(int64_t{260}, int64_t{1} << 20));
  train->add_option("--out", o->out, "Directory to write tokenizer.json + tokenizer.model")
      ->required();
  train->callback([o] {
    const auto corpus = data::load_corpus(o->corpus);
    const auto tokenizer = data::train_sentencepiece(corpus, o->vocab_size, o->out);
    const auto sample =
        corpus.heldout.empty() ? corpus.train.front().text : corpus.heldout.front().text;
    const auto ids = tokenizer->encode(sample);
    fmt::print(
        "wrote {}/tokenizer.json ({} pieces); held-out sample: {:.2f} bytes per token\n", o->out,
        tokenizer->vocab_size(),
        static_cast<double>(sample.size()) / static_cast<double>(std::max<size_t>(1, ids.size())));
  });
  auto* encode = cmd->add_subcommand("encode", "Print the token ids of a text");
  encode->add_option("--tokenizer", o->tokenizer, "'byte' or a tokenizer directory");
  encode->add_option("text", o->text, "Text to encode")->required();
  encode->callback([o] {
    const auto tokenizer = data::load_tokenizer(o->tokenizer);
    const auto ids = tokenizer->encode(o->text);
    fmt::print("{} tokens: {}\n", ids.size(), ids);
  });
}

}  // namespace reach::cli
