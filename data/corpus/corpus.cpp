#include "data/corpus/corpus.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numeric>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>

namespace reach::data {
namespace fs = std::filesystem;

std::string corpus_cache_dir() {
  if (const char* dir = std::getenv("REACH_CACHE_DIR"); dir && *dir) return dir;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg)
    return std::string(xdg) + "/reach";
  if (const char* home = std::getenv("HOME"); home && *home)
    return std::string(home) + "/.cache/reach";
  return "/tmp/reach-cache";
}

uint64_t name_hash64(const std::string& text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string read_file_bytes(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    throw std::runtime_error("'" + path + "' is a directory, not a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read '" + path + "'");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

bool is_heldout(const std::string& document_name) { return name_hash64(document_name) % 8 == 0; }

SplitOptions split_options(double heldout_fraction, const std::string& heldout_files) {
  SplitOptions split;
  split.heldout_fraction = heldout_fraction;
  std::stringstream in(heldout_files);
  std::string item;
  while (std::getline(in, item, ',')) {
    const auto first = item.find_first_not_of(" \t"), last = item.find_last_not_of(" \t");
    if (first == std::string::npos) {
      throw std::invalid_argument("data.heldout_files: empty name in '" + heldout_files +
                                  "' (expected comma-separated document names)");
    }
    split.heldout_files.push_back(item.substr(first, last - first + 1));
  }
  if (!heldout_files.empty() && heldout_files.back() == ',') {
    throw std::invalid_argument("data.heldout_files: empty name in '" + heldout_files + "'");
  }
  return split;
}

namespace {

std::string read_file(const fs::path& path) { return read_file_bytes(path.string()); }

std::string run_bible_program() {
  const char* program = "/usr/bin/bible";
  if (!fs::exists(program) || !fs::exists("/usr/lib/bible.data")) {
    throw std::runtime_error(
        "corpus 'kjv' needs the Debian packages bible-kjv and bible-kjv-text "
        "(run scripts/install-deps)");
  }
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen("/usr/bin/bible 'Gen1:1-Rev22:21'", "r"),
                                             &pclose);
  if (!pipe) throw std::runtime_error("corpus 'kjv': cannot run /usr/bin/bible");
  std::string text;
  std::array<char, 65536> chunk{};
  size_t got = 0;
  while ((got = fread(chunk.data(), 1, chunk.size(), pipe.get())) > 0)
    text.append(chunk.data(), got);
  if (text.size() < 1000000) {
    throw std::runtime_error("corpus 'kjv': /usr/bin/bible printed only " +
                             std::to_string(text.size()) + " bytes");
  }
  return text;
}

Corpus finish(const std::string& name, Corpus corpus) {
  corpus.name = name;
  if (corpus.train.empty()) {
    throw std::runtime_error("corpus '" + name +
                             "' has no training documents (is everything held out? see "
                             "data.heldout_fraction / data.heldout_files)");
  }
  return corpus;
}

// Exactly the named documents are held out.
Corpus split_by_names(const std::string& name, std::vector<Document> documents,
                      const std::vector<std::string>& heldout_names) {
  Corpus corpus;
  std::set<std::string> wanted(heldout_names.begin(), heldout_names.end());
  for (auto& doc : documents) {
    const bool heldout = wanted.erase(doc.name) > 0;
    if (doc.text.empty()) continue;
    (heldout ? corpus.heldout : corpus.train).push_back(std::move(doc));
  }
  if (!wanted.empty()) {
    throw std::invalid_argument("data.heldout_files: corpus '" + name + "' has no document '" +
                                *wanted.begin() +
                                "' (names are paths relative to the corpus folder, the file "
                                "name for a single file, book names for kjv)");
  }
  return finish(name, std::move(corpus));
}

// The named corpora's rule: by document name alone.
Corpus split_by_name_hash(const std::string& name, std::vector<Document> documents) {
  Corpus corpus;
  for (auto& doc : documents) {
    if (doc.text.empty()) continue;
    (is_heldout(doc.name) ? corpus.heldout : corpus.train).push_back(std::move(doc));
  }
  return finish(name, std::move(corpus));
}

// Where a document's held-out tail of about `tail` bytes starts: at a line start when the
// tail holds one, else at a UTF-8 character boundary.
size_t tail_start(const std::string& text, size_t tail) {
  size_t cut = text.size() - std::min(tail, text.size());
  if (cut == 0) return 0;
  const size_t newline = text.find('\n', cut - 1);
  if (newline != std::string::npos && newline + 1 - cut <= tail / 2) return newline + 1;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return cut;
}

// Your files: `fraction` of the bytes held out, whole documents first (in name_hash64 order),
// then the tail of the next one.
Corpus split_by_fraction(const std::string& name, std::vector<Document> documents,
                         double fraction) {
  std::erase_if(documents, [](const Document& d) { return d.text.empty(); });
  size_t total = 0;
  for (const auto& d : documents) total += d.text.size();
  const auto target = static_cast<size_t>(std::ceil(fraction * static_cast<double>(total)));
  std::vector<size_t> order(documents.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return name_hash64(documents[a].name) < name_hash64(documents[b].name);
  });
  std::vector<size_t> cut(documents.size(), std::string::npos);  // npos: all training
  size_t held = 0;
  for (const size_t i : order) {
    if (held >= target) break;
    const size_t size = documents[i].text.size();
    if (held + size <= target) {
      cut[i] = 0;
      held += size;
    } else {
      cut[i] = tail_start(documents[i].text, target - held);
      break;
    }
  }
  Corpus corpus;
  for (size_t i = 0; i < documents.size(); ++i) {
    auto& doc = documents[i];
    if (cut[i] == std::string::npos) {
      corpus.train.push_back(std::move(doc));
    } else if (cut[i] == 0) {
      corpus.heldout.push_back(std::move(doc));
    } else {
      corpus.heldout.push_back(
          {doc.name + " [from byte " + std::to_string(cut[i]) + "]", doc.text.substr(cut[i])});
      doc.text.resize(cut[i]);
      corpus.train.push_back(std::move(doc));
    }
  }
  return finish(name, std::move(corpus));
}

void check_fraction(double fraction) {
  if (!(fraction > 0 && fraction < 1)) {
    throw std::invalid_argument("data.heldout_fraction must be in (0, 1), got " +
                                std::to_string(fraction));
  }
}

// The Linux kernel source tree from linux-source-6.1: every .c, .h, .rst and .txt file is a
// document. Extracted once (tar + xz) into the cache directory.
std::vector<Document> load_linux_source(const std::string& cache_dir) {
  std::vector<fs::path> tarballs;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/src", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("linux-source-") && name.ends_with(".tar.xz"))
      tarballs.push_back(entry.path());
  }
  if (tarballs.empty()) {
    throw std::runtime_error(
        "corpus 'linux' needs the Debian package linux-source-6.1 (apt-get install "
        "linux-source-6.1; about 140 MB)");
  }
  std::sort(tarballs.begin(), tarballs.end());
  const fs::path out = fs::path(cache_dir) / tarballs.back().stem().stem();
  if (!fs::exists(out / ".complete")) {
    fs::create_directories(out);
    const std::string command = "tar -xJf '" + tarballs.back().string() + "' -C '" + out.string() +
                                "' --wildcards '*.c' '*.h' '*.rst' '*.txt'";
    if (std::system(command.c_str()) != 0) {
      throw std::runtime_error("corpus 'linux': extracting " + tarballs.back().string() +
                               " failed");
    }
    std::ofstream(out / ".complete") << "ok\n";
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::recursive_directory_iterator(out)) {
    if (entry.is_regular_file() && entry.path().filename() != ".complete")
      files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  std::vector<Document> documents;
  for (const auto& f : files) documents.push_back({fs::relative(f, out).string(), read_file(f)});
  return documents;
}

}  // namespace

std::vector<Document> split_kjv_books(const std::string& bible_text) {
  // Chapter headings are lines "Book N"; verses are "  V text" (wrapped lines follow).
  static const std::regex heading(R"(^([1-3]?[ ]?[A-Z][A-Za-z ]*[a-z]) ([0-9]+)$)");
  static const std::regex verse_number(R"(^ +[0-9]+ )");
  std::vector<Document> books;
  std::istringstream lines(bible_text);
  std::string line;
  std::smatch match;
  while (std::getline(lines, line)) {
    if (std::regex_match(line, match, heading)) {
      const std::string book = match[1];
      if (books.empty() || books.back().name != book) books.push_back({book, ""});
      continue;
    }
    if (books.empty() || line.empty()) continue;
    std::string text = std::regex_replace(line, verse_number, "");
    const bool new_verse = text.size() != line.size();
    std::string& out = books.back().text;
    if (!out.empty()) out += new_verse ? '\n' : ' ';
    out += text;
  }
  for (auto& b : books) b.text += '\n';
  return books;
}

std::vector<Document> read_documents(const std::string& path_text) {
  const fs::path path(path_text);
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    throw std::runtime_error(
        "corpus '" + path_text +
        "' is neither a known corpus (kjv, linux) nor an existing file or folder");
  }
  std::vector<Document> documents;
  if (fs::is_regular_file(path)) {
    documents.push_back({path.filename().string(), read_file(path)});
  } else {
    std::vector<fs::path> files;
    for (const auto& entry : fs::recursive_directory_iterator(path)) {
      if (entry.is_regular_file()) files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      documents.push_back({fs::relative(f, path).string(), read_file(f)});
    }
  }
  if (documents.empty()) throw std::runtime_error("corpus '" + path_text + "' has no files");
  return documents;
}

Corpus load_corpus(const std::string& name_or_path, const SplitOptions& split) {
  check_fraction(split.heldout_fraction);
  const bool named = name_or_path == "kjv" || name_or_path == "linux";
  if (named && split.heldout_files.empty() &&
      split.heldout_fraction != SplitOptions{}.heldout_fraction) {
    throw std::invalid_argument("data.heldout_fraction applies to your own files; corpus '" +
                                name_or_path +
                                "' has a fixed split by document name (docs/data.md); set "
                                "data.heldout_files to choose its held-out documents");
  }
  auto split_documents = [&](std::vector<Document> documents) {
    if (!split.heldout_files.empty())
      return split_by_names(name_or_path, std::move(documents), split.heldout_files);
    if (named) return split_by_name_hash(name_or_path, std::move(documents));
    return split_by_fraction(name_or_path, std::move(documents), split.heldout_fraction);
  };
  if (name_or_path == "kjv") return split_documents(split_kjv_books(run_bible_program()));
  if (name_or_path == "linux") return split_documents(load_linux_source(corpus_cache_dir()));
  auto documents = read_documents(name_or_path);
  const bool all_empty = std::all_of(documents.begin(), documents.end(),
                                     [](const Document& d) { return d.text.empty(); });
  if (all_empty) {
    throw std::runtime_error("corpus '" + name_or_path + "' has no text (its files are all empty)");
  }
  return split_documents(std::move(documents));
}

}  // namespace reach::data
