#include "data/tokenizer/tokenizer.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "data/tokenizer/sentencepiece_runner.hpp"

namespace reach::data {
namespace fs = std::filesystem;
namespace {

std::string read_all(const fs::path& path) { return read_file_bytes(path.string()); }

void write_all(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!(out << text)) throw std::runtime_error("cannot write '" + path.string() + "'");
}

class ByteTokenizer final : public Tokenizer {
 public:
  std::string kind() const override { return "byte"; }
  int64_t vocab_size() const override { return 256; }
  std::vector<uint32_t> encode(const std::string& text) const override {
    std::vector<uint32_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  std::string decode(const std::vector<uint32_t>& ids) const override {
    std::string text;
    for (uint32_t id : ids) {
      if (id > 255)
        throw std::invalid_argument("byte tokenizer: id " + std::to_string(id) + " > 255");
      text.push_back(static_cast<char>(id));
    }
    return text;
  }
  std::string piece(uint32_t id) const override {
    if (id > 255)
      throw std::invalid_argument("byte tokenizer: id " + std::to_string(id) + " > 255");
    if (id >= 0x21 && id < 0x7f) return std::string(1, static_cast<char>(id));
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", id);
    return hex;
  }
  std::vector<int64_t> token_bytes() const override { return std::vector<int64_t>(256, 1); }
  std::string fingerprint() const override { return "byte"; }
  void save(const std::string& dir) const override {
    write_all(fs::path(dir) / "tokenizer.json", R"({"type": "byte", "vocab_size": 256})"
                                                "\n");
  }
};

// Runs a command with stdin from a file and returns its stdout; throws naming the command.
std::string run_tool(const std::string& command, const fs::path& input) {
  const std::string full = command + " < '" + input.string() + "' 2>/dev/null";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(full.c_str(), "r"), &pclose);
  if (!pipe) throw std::runtime_error("cannot run: " + command);
  std::string out;
  char buffer[65536];
  size_t got = 0;
  while ((got = fread(buffer, 1, sizeof buffer, pipe.get())) > 0) out.append(buffer, got);
  if (pclose(pipe.release()) != 0) {
    throw std::runtime_error("'" + command.substr(0, 200) + "' failed (sentencepiece runner: " +
                             to_string(sentencepiece_runner()) + ")");
  }
  return out;
}

fs::path temp_file(const std::string& stem) {
  static std::atomic<int> counter{0};
  return fs::temp_directory_path() /
         (stem + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
}

// Sentencepiece in its own processes (sentencepiece_runner.hpp says why and which). Encoding
// happens once per corpus (token cache), so the process cost does not matter. Both runners
// work line by line: newlines are encoded as the byte-fallback piece <0x0A>.
class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(fs::path dir) : dir_(std::move(dir)) {
    model_bytes_ = read_all(dir_ / "tokenizer.model");
    std::istringstream vocab(read_all(dir_ / "tokenizer.vocab"));
    std::string line;
    while (std::getline(vocab, line)) {
      if (line.rfind("<0x0A>\t", 0) == 0) newline_id_ = static_cast<uint32_t>(vocab_size_);
      pieces_.push_back(line.substr(0, line.find('\t')));
      ++vocab_size_;
    }
    if (vocab_size_ < 1 || newline_id_ == kNone) {
      throw std::runtime_error("sentencepiece tokenizer '" + dir_.string() +
                               "': tokenizer.vocab is empty or has no byte-fallback <0x0A>");
    }
  }
  std::string kind() const override { return "sentencepiece"; }
  int64_t vocab_size() const override { return vocab_size_; }
  std::vector<uint32_t> encode(const std::string& text) const override {
    return std::move(encode_batch({std::string_view(text)}).front());
  }
  // Batches of consecutive texts of up to kBatchBytes, one process each, up to one process
  // per core at a time; results in the order of the texts.
  std::vector<std::vector<uint32_t>> encode_many(
      const std::vector<std::string_view>& texts) const override {
    constexpr size_t kBatchBytes = size_t{4} << 20;
    std::vector<std::pair<size_t, size_t>> batches;  // [first, last)
    for (size_t first = 0; first < texts.size();) {
      size_t last = first, bytes = 0;
      while (last < texts.size() && (last == first || bytes + texts[last].size() <= kBatchBytes))
        bytes += texts[last++].size();
      batches.emplace_back(first, last);
      first = last;
    }
    std::vector<std::vector<uint32_t>> result(texts.size());
    std::vector<std::exception_ptr> errors(batches.size());
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t b = next++; b < batches.size(); b = next++) {
        try {
          const auto [first, last] = batches[b];
          auto ids = encode_batch(
              std::vector<std::string_view>(texts.begin() + first, texts.begin() + last));
          for (size_t i = first; i < last; ++i) result[i] = std::move(ids[i - first]);
        } catch (...) {
          errors[b] = std::current_exception();
        }
      }
    };
    const size_t workers =
        std::min<size_t>(batches.size(), std::max(1u, std::thread::hardware_concurrency()));
    std::vector<std::thread> pool;
    for (size_t w = 1; w < workers; ++w) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
    for (const auto& e : errors) {
      if (e) std::rethrow_exception(e);
    }
    return result;
  }
  std::string decode(const std::vector<uint32_t>& ids) const override {
    std::string lines;
    bool trailing_newline = false;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] >= static_cast<uint32_t>(vocab_size_)) {
        throw std::invalid_argument("sentencepiece: id " + std::to_string(ids[i]) +
                                    " out of vocabulary");
      }
      if (ids[i] == newline_id_) {
        lines += '\n';
        trailing_newline = i + 1 == ids.size();
      } else {
        lines += std::to_string(ids[i]) + ' ';
      }
    }
    if (!trailing_newline) lines += '\n';
    const auto input = temp_file("reach-spm-ids");
    write_all(input, lines);
    std::string text = run_tool(
        sentencepiece_decode_command(sentencepiece_runner(), dir_ / "tokenizer.model"), input);
    fs::remove(input);
    if (!trailing_newline && !text.empty() && text.back() == '\n') text.pop_back();
    return text;
  }
  std::string piece(uint32_t id) const override {
    if (id >= pieces_.size()) {
      throw std::invalid_argument("sentencepiece: id " + std::to_string(id) +
                                  " out of vocabulary (" + std::to_string(vocab_size_) + ")");
    }
    return pieces_[id];
  }
  std::vector<int64_t> token_bytes() const override {
    static const std::string space_mark = "\u2581";
    std::vector<int64_t> bytes;
    for (const auto& p : pieces_) {
      const bool byte_piece = p.size() == 6 && p.starts_with("<0x") && p.back() == '>';
      const bool control = p == "<unk>" || p == "<s>" || p == "</s>";
      int64_t n = static_cast<int64_t>(p.size());
      for (size_t at = p.find(space_mark); at != std::string::npos; at = p.find(space_mark, at + 1))
        n -= static_cast<int64_t>(space_mark.size()) - 1;
      bytes.push_back(byte_piece ? 1 : control ? 0 : n);
    }
    return bytes;
  }
  std::string fingerprint() const override {
    return "sp-" + std::to_string(name_hash64(model_bytes_));
  }
  void save(const std::string& dir) const override {
    if (fs::weakly_canonical(dir) != fs::weakly_canonical(dir_)) {
      fs::copy_file(dir_ / "tokenizer.model", fs::path(dir) / "tokenizer.model",
                    fs::copy_options::overwrite_existing);
      fs::copy_file(dir_ / "tokenizer.vocab", fs::path(dir) / "tokenizer.vocab",
                    fs::copy_options::overwrite_existing);
    }
    nlohmann::json j{{"type", "sentencepiece"},
                     {"vocab_size", vocab_size_},
                     {"model", "tokenizer.model"},
                     {"vocab", "tokenizer.vocab"}};
    write_all(fs::path(dir) / "tokenizer.json", j.dump(2) + "\n");
  }

 private:
  // Lines a text gives the runners (which read line by line): a trailing newline ends the
  // last line rather than starting an empty one.
  static size_t input_lines(std::string_view text) {
    return static_cast<size_t>(std::count(text.begin(), text.end(), '\n')) +
           (text.empty() || text.back() == '\n' ? 0 : 1);
  }
  // One process for all of `texts`: their lines back to back (each text ended by a newline),
  // the output's lines split back by each text's line count.
  std::vector<std::vector<uint32_t>> encode_batch(
      const std::vector<std::string_view>& texts) const {
    const auto input = temp_file("reach-spm-in");
    {
      std::ofstream in(input, std::ios::binary | std::ios::trunc);
      for (const auto text : texts) {
        in.write(text.data(), static_cast<std::streamsize>(text.size()));
        if (!text.empty() && text.back() != '\n') in.put('\n');
      }
      if (!in) throw std::runtime_error("cannot write '" + input.string() + "'");
    }
    std::string out;
    try {
      out = run_tool(sentencepiece_encode_command(sentencepiece_runner(), dir_ / "tokenizer.model"),
                     input);
    } catch (...) {
      fs::remove(input);
      throw;
    }
    fs::remove(input);
    std::vector<std::vector<uint32_t>> result(texts.size());
    size_t at = 0, produced = 0, expected = 0;
    for (size_t i = 0; i < texts.size(); ++i) {
      const size_t lines = input_lines(texts[i]);
      expected += lines;
      auto& ids = result[i];
      for (size_t j = 0; j < lines && at < out.size(); ++j, ++produced) {
        const size_t end = std::min(out.find('\n', at), out.size());
        if (j > 0) ids.push_back(newline_id_);
        const char* p = out.data() + at;
        const char* stop = out.data() + end;
        while (p < stop) {
          while (p < stop && *p == ' ') ++p;
          if (p == stop) break;
          uint32_t id = 0;
          const auto [next, ec] = std::from_chars(p, stop, id);
          if (ec != std::errc()) {
            throw std::runtime_error("sentencepiece encode printed a non-id: '" +
                                     std::string(p, std::min<size_t>(20, stop - p)) + "'");
          }
          ids.push_back(id);
          p = next;
        }
        at = end + 1;
      }
      if (!texts[i].empty() && texts[i].back() == '\n') ids.push_back(newline_id_);
    }
    const size_t printed = static_cast<size_t>(std::count(out.begin(), out.end(), '\n')) +
                           (out.empty() || out.back() == '\n' ? 0 : 1);
    if (produced != expected || printed != expected) {
      throw std::runtime_error("sentencepiece encode returned " + std::to_string(printed) +
                               " lines for " + std::to_string(expected));
    }
    return result;
  }

  static constexpr uint32_t kNone = ~0u;
  fs::path dir_;
  std::string model_bytes_;
  int64_t vocab_size_ = 0;
  uint32_t newline_id_ = kNone;
  std::vector<std::string> pieces_;
};

}  // namespace

std::vector<std::vector<uint32_t>> Tokenizer::encode_many(
    const std::vector<std::string_view>& texts) const {
  std::vector<std::vector<uint32_t>> result;
  result.reserve(texts.size());
  for (const auto text : texts) result.push_back(encode(std::string(text)));
  return result;
}

std::unique_ptr<Tokenizer> make_byte_tokenizer() { return std::make_unique<ByteTokenizer>(); }

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec) {
  if (spec == "byte") return make_byte_tokenizer();
  const fs::path dir(spec);
  if (!fs::exists(dir / "tokenizer.json")) {
    throw std::runtime_error("tokenizer '" + spec +
                             "' is neither 'byte' nor a directory with tokenizer.json");
  }
  const auto j = nlohmann::json::parse(read_all(dir / "tokenizer.json"), nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("type")) {
    throw std::runtime_error("tokenizer '" + spec + "': tokenizer.json is corrupt");
  }
  const std::string type = j.value("type", "");
  if (type == "byte") return make_byte_tokenizer();
  if (type == "sentencepiece") {
    return std::make_unique<SentencePieceTokenizer>(dir);
  }
  throw std::runtime_error("tokenizer '" + spec + "': unknown type '" + type + "'");
}

std::unique_ptr<Tokenizer> train_sentencepiece(const Corpus& corpus, int64_t vocab_size,
                                               const std::string& out_dir) {
  if (vocab_size < kMinSentencepieceVocab) {
    throw std::invalid_argument(
        "sentencepiece vocab_size must be >= " + std::to_string(kMinSentencepieceVocab) +
        " (256 byte pieces, <unk>, <s>, </s> and at least one merge), got " +
        std::to_string(vocab_size));
  }
  fs::create_directories(out_dir);
  const fs::path input = fs::path(out_dir) / "training_text.txt";
  {
    std::ofstream out(input, std::ios::trunc);
    for (const auto& doc : corpus.train) out << doc.text << "\n";
  }
  const std::string prefix = (fs::path(out_dir) / "tokenizer").string();
  const std::string command = sentencepiece_train_command(
      sentencepiece_runner(),
      {"--input=" + input.string(), "--model_prefix=" + prefix,
       "--vocab_size=" + std::to_string(vocab_size), "--model_type=bpe", "--character_coverage=1.0",
       "--byte_fallback=true", "--normalization_rule_name=identity",
       "--remove_extra_whitespaces=false", "--split_by_whitespace=true",
       "--max_sentence_length=100000", "--input_sentence_size=2000000",
       "--shuffle_input_sentence=true", "--num_threads=2"});
  const int status = std::system((command + " > '" + prefix + ".log' 2>&1").c_str());
  fs::remove(input);
  if (status != 0) {
    // spm_train states its limits (e.g. the largest vocabulary this corpus supports) in its
    // log: bring that line into the error.
    std::istringstream log(fs::exists(prefix + ".log") ? read_all(prefix + ".log") : "");
    std::string line, reason;
    while (std::getline(log, line)) {
      if (line.find("Vocabulary size") != std::string::npos ||
          line.find("Check failed") != std::string::npos || reason.empty())
        reason = line;
    }
    // "spm_train_main.cc(275) [...] Internal: ...(660) [...] Vocabulary size too high (5000).
    // Please set it to a value <= 1957.": keep the sentence.
    const auto vocab_at = reason.find("Vocabulary size");
    const auto bracket_at = reason.rfind("] ");
    if (vocab_at != std::string::npos) {
      reason = reason.substr(vocab_at);
    } else if (bracket_at != std::string::npos) {
      reason = reason.substr(bracket_at + 2);
    }
    throw std::runtime_error("sentencepiece training failed" +
                             (reason.empty() ? std::string() : ": " + reason) + " (vocab_size " +
                             std::to_string(vocab_size) + "; full log: " + prefix + ".log)");
  }
  auto tokenizer = std::make_unique<SentencePieceTokenizer>(fs::path(out_dir));
  tokenizer->save(out_dir);
  return tokenizer;
}

}  // namespace reach::data
