#include "cli/eval_text.hpp"

#include "data/corpus/corpus.hpp"
#include "data/tokenizer/tokenizer.hpp"
#include "train/trainer.hpp"

namespace reach::cli {

EvalText eval_text(const std::string& text_file, const std::string& corpus_name,
                   const train::Checkpoint& ckpt, const std::string& dir) {
  EvalText out;
  if (!text_file.empty()) {
    // All of it: text given to score has no training part.
    const auto tokenizer = data::load_tokenizer(dir);
    for (const auto& doc : data::read_documents(text_file)) {
      const auto ids = tokenizer->encode(doc.text);
      out.documents.emplace_back(ids.begin(), ids.end());
    }
    out.description = "all of " + text_file;
    out.remedy = "lower --lengths, or give longer text";
    return out;
  }
  const auto& c = ckpt.config;
  const std::string corpus = corpus_name.empty() ? c.corpus : corpus_name;
  // The checkpoint's own corpus is split as it was in training; another corpus by its default.
  const auto split = corpus == c.corpus ? data::split_options(c.heldout_fraction, c.heldout_files)
                                        : data::SplitOptions{};
  auto data = train::load_token_data(corpus, split, dir, c.cache_dir);
  out.documents = std::move(data.heldout);
  out.description = "held-out part of " + corpus;
  out.remedy = "lower --lengths, or score other text with --text FILE";
  return out;
}

}  // namespace reach::cli
