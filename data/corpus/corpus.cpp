#include "data/corpus/corpus.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
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

uint64_t fnv1a64(const std::string& text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

bool is_heldout(const std::string& document_name) { return fnv1a64(document_name) % 8 == 0; }

namespace {

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read '" + path.string() + "'");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

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

Corpus split(const std::string& name, std::vector<Document> documents) {
  Corpus corpus;
  corpus.name = name;
  for (auto& doc : documents) {
    if (doc.text.empty()) continue;
    (is_heldout(doc.name) ? corpus.heldout : corpus.train).push_back(std::move(doc));
  }
  if (corpus.train.empty()) {
    throw std::runtime_error("corpus '" + name + "' has no training documents");
  }
  return corpus;
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

Corpus load_corpus(const std::string& name_or_path) {
  if (name_or_path == "kjv") return split("kjv", split_kjv_books(run_bible_program()));
  if (name_or_path == "linux") return split("linux", load_linux_source(corpus_cache_dir()));
  const fs::path path(name_or_path);
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    throw std::runtime_error(
        "corpus '" + name_or_path +
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
  if (documents.empty()) throw std::runtime_error("corpus '" + name_or_path + "' has no files");
  return split(name_or_path, std::move(documents));
}

}  // namespace reach::data
