// `reach tokenizer train --corpus NAME --vocab-size N --out DIR`,
// `reach tokenizer encode --tokenizer DIR TEXT` (ids and pieces: to look at what it does) and
// `reach tokenizer decode --tokenizer DIR ID...` and
// `reach tokenizer count --corpus NAME --tokenizer DIR` (builds the token cache a training run
// would build, and says how many tokens each split holds).
#include <fmt/core.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <memory>

#include "cli/commands.hpp"
#include "cli/validators.hpp"
#include "data/tokenizer/token_cache.hpp"
#include "data/tokenizer/tokenizer.hpp"

namespace reach::cli {
namespace {

struct TokenizerOptions {
  std::string corpus = "kjv";
  int64_t vocab_size = 4096;
  std::string out;
  std::string tokenizer = "byte";
  std::string text;
  std::vector<int64_t> ids;
  std::string cache_dir;
};

}  // namespace

void add_tokenizer_command(CLI::App& app) {
  auto o = std::make_shared<TokenizerOptions>();
  auto* cmd = app.add_subcommand("tokenizer", "Train or try a tokenizer");
  cmd->require_subcommand(1);
  auto* train = cmd->add_subcommand("train", "Train a sentencepiece BPE tokenizer on a corpus");
  train->add_option("--corpus", o->corpus, "Corpus name (kjv) or path to text file/folder");
  train
      ->add_option("--vocab-size", o->vocab_size,
                   fmt::format("Vocabulary size: at least {} (256 byte pieces, <unk>, <s>, </s>, "
                               "one merge), at most what the corpus supports (spm_train's "
                               "limit, said in the error when exceeded; roughly the number of "
                               "distinct words and sub-words)",
                               data::kMinSentencepieceVocab))
      ->check(CLI::Range(data::kMinSentencepieceVocab, int64_t{1} << 20))
      ->capture_default_str();
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
  auto* encode = cmd->add_subcommand("encode", "Print the token ids and pieces of a text");
  encode->add_option("--tokenizer", o->tokenizer, "'byte' or a tokenizer directory")
      ->capture_default_str();
  encode->add_option("text", o->text, "Text to encode")->required();
  encode->callback([o] {
    const auto tokenizer = data::load_tokenizer(o->tokenizer);
    const auto ids = tokenizer->encode(o->text);
    std::vector<std::string> pieces;
    for (const auto id : ids) pieces.push_back(tokenizer->piece(id));
    fmt::print("{} tokens ({} bytes)\nids:    {}\npieces: {}\n", ids.size(), o->text.size(), ids,
               pieces);
  });
  auto* decode = cmd->add_subcommand("decode", "Print the text of token ids");
  decode->add_option("--tokenizer", o->tokenizer, "'byte' or a tokenizer directory")
      ->capture_default_str();
  decode->add_option("ids", o->ids, "Token ids (e.g. from `reach tokenizer encode`)")->required();
  decode->callback([o] {
    const auto tokenizer = data::load_tokenizer(o->tokenizer);
    std::vector<uint32_t> ids;
    for (const auto id : o->ids) {
      if (id < 0 || id >= tokenizer->vocab_size()) {
        throw std::invalid_argument(
            fmt::format("token id {} is outside 0..{} (the vocabulary of '{}')", id,
                        tokenizer->vocab_size() - 1, o->tokenizer));
      }
      ids.push_back(static_cast<uint32_t>(id));
    }
    fmt::print("{}\n", tokenizer->decode(ids));
  });
  auto* count = cmd->add_subcommand(
      "count",
      "Tokenize a corpus into the token cache (as a training run would) and print the number "
      "of tokens in its training and held-out parts");
  count->add_option("--corpus", o->corpus, "Corpus name (kjv, linux) or path to text file/folder")
      ->capture_default_str();
  count->add_option("--tokenizer", o->tokenizer, "'byte' or a tokenizer directory")
      ->capture_default_str();
  count->add_option("--cache-dir", o->cache_dir,
                    "Token cache directory (default: $REACH_CACHE_DIR, else ~/.cache/reach)");
  count->callback([o] {
    const auto corpus = data::load_corpus(o->corpus);
    const auto tokenizer = data::load_tokenizer(o->tokenizer);
    const auto cache = data::TokenizedCorpus::open_or_build(corpus, *tokenizer, o->cache_dir);
    size_t train_bytes = 0, heldout_bytes = 0, heldout_tokens = 0;
    for (const auto& doc : corpus.train) train_bytes += doc.text.size();
    for (const auto& doc : corpus.heldout) heldout_bytes += doc.text.size();
    for (const auto& doc : cache.heldout()) heldout_tokens += doc.size();
    const auto per_token = [](size_t bytes, size_t tokens) {
      return static_cast<double>(bytes) / static_cast<double>(std::max<size_t>(1, tokens));
    };
    fmt::print(
        "corpus {} with tokenizer {}: training {} tokens ({} documents, {} bytes, {:.2f} bytes "
        "per token); held out {} tokens ({} documents, {} bytes, {:.2f} bytes per token); "
        "cache {} ({})\n",
        o->corpus, tokenizer->kind(), cache.train_stream().size(), corpus.train.size(), train_bytes,
        per_token(train_bytes, cache.train_stream().size()), heldout_tokens, corpus.heldout.size(),
        heldout_bytes, per_token(heldout_bytes, heldout_tokens), cache.path(),
        cache.built_now() ? "built now" : "reused");
  });
}

}  // namespace reach::cli
