#include "data/tasks/filler_text.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <mutex>
#include <stdexcept>

#include "data/corpus/corpus.hpp"

namespace reach::data::tasks {

std::shared_ptr<const std::string> load_filler_text(const std::string& corpus,
                                                    const std::string& what) {
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<const std::string>> cache;
  const std::lock_guard<std::mutex> lock(mutex);
  if (auto it = cache.find(corpus); it != cache.end()) return it->second;
  if (corpus.empty()) {
    throw std::invalid_argument(what + ": task.corpus is empty (a text file, a folder or kjv)");
  }
  std::vector<Document> documents;
  try {
    if (corpus == "kjv") {
      auto c = load_corpus("kjv");
      documents = std::move(c.train);
      documents.insert(documents.end(), std::make_move_iterator(c.heldout.begin()),
                       std::make_move_iterator(c.heldout.end()));
    } else {
      std::error_code ec;
      if (!std::filesystem::exists(corpus, ec)) {
        throw std::invalid_argument("task.corpus '" + corpus + "' does not exist");
      }
      documents = read_documents(corpus);
    }
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(what + ": " + e.what());
  } catch (const std::runtime_error& e) {
    throw std::invalid_argument(what + ": task.corpus '" + corpus + "': " + e.what());
  }
  auto text = std::make_shared<std::string>();
  for (const auto& doc : documents) {
    if (!text->empty()) text->push_back('\n');
    text->append(doc.text);
  }
  if (text->empty()) {
    throw std::invalid_argument(what + ": task.corpus '" + corpus + "' is empty");
  }
  cache.emplace(corpus, text);
  return text;
}

void append_filler_span(const std::string& text, int64_t count, std::mt19937_64& rng,
                        std::vector<int32_t>& out) {
  if (count <= 0) return;
  const auto size = static_cast<int64_t>(text.size());
  const int64_t start = std::uniform_int_distribution<int64_t>(0, size - count)(rng);
  for (int64_t i = 0; i < count; ++i) {
    out.push_back(static_cast<unsigned char>(text[static_cast<size_t>(start + i)]));
  }
}

void append_bytes(const std::string& s, std::vector<int32_t>& out) {
  for (unsigned char c : s) out.push_back(c);
}

std::vector<int64_t> insertion_offsets(int64_t slots, int64_t count, std::mt19937_64& rng) {
  std::uniform_int_distribution<int64_t> offset(0, slots);
  std::vector<int64_t> out(static_cast<size_t>(count));
  for (auto& o : out) o = offset(rng);
  std::sort(out.begin(), out.end());
  return out;
}

void require_filler(const std::string& what, const std::string& corpus, const std::string& text,
                    int64_t needed, const std::string& context) {
  if (static_cast<int64_t>(text.size()) < needed) {
    throw std::invalid_argument(what + ": task.corpus '" + corpus + "' has " +
                                std::to_string(text.size()) + " bytes, fewer than the " +
                                std::to_string(needed) + " bytes of filler " + context +
                                " (the filler is one contiguous span of it)");
  }
}

}  // namespace reach::data::tasks
