#include "data/tokenizer/token_cache.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

namespace reach::data {
namespace fs = std::filesystem;

std::string default_cache_dir() { return corpus_cache_dir(); }

TokenizedCorpus::TokenizedCorpus(TokenizedCorpus&& o) noexcept
    : base_(o.base_),
      bytes_(o.bytes_),
      train_(o.train_),
      heldout_(std::move(o.heldout_)),
      path_(std::move(o.path_)),
      built_now_(o.built_now_) {
  o.base_ = nullptr;
  o.bytes_ = 0;
}

TokenizedCorpus::~TokenizedCorpus() {
  if (base_ && bytes_ > 0) munmap(const_cast<uint32_t*>(base_), bytes_);
}

namespace {

uint64_t corpus_key(const Corpus& corpus) {
  uint64_t h = name_hash64(corpus.name);
  for (const auto* split : {&corpus.train, &corpus.heldout}) {
    for (const auto& d : *split)
      h = h * 1099511628211ull ^ name_hash64(d.name) ^ (name_hash64(d.text) << 1) ^
          (split == &corpus.heldout ? 0x9e3779b97f4a7c15ull : 0);
  }
  return h;
}

void build(const Corpus& corpus, const Tokenizer& tokenizer, const fs::path& tokens_path,
           const fs::path& index_path, const std::string& key) {
  const fs::path tmp_tokens = tokens_path.string() + ".tmp",
                 tmp_index = index_path.string() + ".tmp";
  std::ofstream out(tmp_tokens, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("cannot write token cache '" + tmp_tokens.string() + "'");
  nlohmann::json docs = nlohmann::json::array();
  uint64_t offset = 0;
  // Documents in groups of up to kGroupBytes of text through encode_many (a sentencepiece
  // process per batch, not per document), written as each group is done.
  constexpr size_t kGroupBytes = size_t{256} << 20;
  std::vector<std::pair<const Document*, bool>> all;  // document, held out
  size_t total_bytes = 0;
  for (const auto* split : {&corpus.train, &corpus.heldout}) {
    for (const auto& d : *split) {
      all.emplace_back(&d, split == &corpus.heldout);
      total_bytes += d.text.size();
    }
  }
  const bool report = total_bytes > (size_t{64} << 20);  // progress for corpora of minutes
  size_t done_bytes = 0;
  for (size_t first = 0; first < all.size();) {
    std::vector<std::string_view> texts;
    size_t bytes = 0, last = first;
    while (last < all.size() &&
           (last == first || bytes + all[last].first->text.size() <= kGroupBytes)) {
      texts.emplace_back(all[last].first->text);
      bytes += all[last++].first->text.size();
    }
    const auto encoded = tokenizer.encode_many(texts);
    for (size_t i = first; i < last; ++i) {
      const auto& ids = encoded[i - first];
      out.write(reinterpret_cast<const char*>(ids.data()),
                static_cast<std::streamsize>(ids.size() * 4));
      docs.push_back({{"name", all[i].first->name},
                      {"heldout", all[i].second},
                      {"offset", offset},
                      {"length", ids.size()}});
      offset += ids.size();
    }
    done_bytes += bytes;
    if (report) {
      std::fprintf(stderr, "token cache: tokenized %zu of %zu MB (%zu documents), %llu tokens\n",
                   done_bytes >> 20, total_bytes >> 20, last,
                   static_cast<unsigned long long>(offset));
    }
    first = last;
  }
  out.close();
  if (!out) throw std::runtime_error("cannot write token cache '" + tmp_tokens.string() + "'");
  nlohmann::json index{{"key", key}, {"tokens", offset}, {"documents", docs}};
  std::ofstream(tmp_index, std::ios::trunc) << index.dump() << "\n";
  fs::rename(tmp_tokens, tokens_path);  // tokens first: an index never points at missing data
  fs::rename(tmp_index, index_path);
}

}  // namespace

TokenizedCorpus TokenizedCorpus::open_or_build(const Corpus& corpus, const Tokenizer& tokenizer,
                                               const std::string& cache_dir_in) {
  const fs::path dir = cache_dir_in.empty() ? default_cache_dir() : cache_dir_in;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    throw std::runtime_error("cannot create token cache directory '" + dir.string() +
                             "' (data.cache_dir / REACH_CACHE_DIR): " + ec.message());
  }
  const std::string key = std::to_string(corpus_key(corpus)) + "-" + tokenizer.fingerprint();
  const fs::path tokens_path = dir / (key + ".tokens"), index_path = dir / (key + ".json");
  TokenizedCorpus result;
  if (!fs::exists(index_path) || !fs::exists(tokens_path)) {
    build(corpus, tokenizer, tokens_path, index_path, key);
    result.built_now_ = true;
  }
  std::ifstream index_file(index_path);
  const auto index = nlohmann::json::parse(index_file, nullptr, false);
  if (index.is_discarded() || index.value("key", "") != key || !index.contains("documents")) {
    throw std::runtime_error("token cache index '" + index_path.string() +
                             "' is corrupt (delete it to rebuild)");
  }
  const uint64_t tokens = index.value("tokens", uint64_t{0});
  const int fd = ::open(tokens_path.c_str(), O_RDONLY);
  struct stat st {};
  if (fd < 0 || fstat(fd, &st) != 0)
    throw std::runtime_error("cannot open '" + tokens_path.string() + "'");
  if (static_cast<uint64_t>(st.st_size) != tokens * 4) {
    ::close(fd);
    throw std::runtime_error("token cache '" + tokens_path.string() + "' has " +
                             std::to_string(st.st_size) + " bytes, its index says " +
                             std::to_string(tokens * 4) + " (truncated? delete it to rebuild)");
  }
  result.path_ = tokens_path.string();
  result.bytes_ = static_cast<size_t>(st.st_size);
  if (result.bytes_ > 0) {
    void* map = mmap(nullptr, result.bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (map == MAP_FAILED) throw std::runtime_error("cannot map '" + tokens_path.string() + "'");
    result.base_ = static_cast<const uint32_t*>(map);
  } else {
    ::close(fd);
  }
  uint64_t train_end = 0;
  for (const auto& d : index["documents"]) {
    const uint64_t off = d.value("offset", uint64_t{0}), len = d.value("length", uint64_t{0});
    if (off + len > tokens)
      throw std::runtime_error("token cache index '" + index_path.string() + "' is corrupt");
    if (d.value("heldout", false)) {
      result.heldout_.emplace_back(result.base_ + off, len);
    } else {
      train_end = off + len;  // training documents come first, back to back
    }
  }
  result.train_ = std::span<const uint32_t>(result.base_, train_end);
  return result;
}

}  // namespace reach::data
