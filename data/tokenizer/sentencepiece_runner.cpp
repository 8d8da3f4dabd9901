#include "data/tokenizer/sentencepiece_runner.hpp"

#include <cstdlib>
#include <stdexcept>

namespace reach::data {
namespace {

std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out.append("'\\''");
    } else {
      out.push_back(c);
    }
  }
  out.push_back('\'');
  return out;
}

std::string python() {
  const char* chosen = std::getenv("REACH_PYTHON");
  return chosen != nullptr && *chosen != '\0' ? chosen : "python3";
}

bool succeeds(const std::string& command) {
  return std::system((command + " >/dev/null 2>&1").c_str()) == 0;
}

// Python's side, as spm_encode / spm_decode behave: lines as std::getline splits them (no
// empty last line after a final newline), ids space-separated, one output line per input line.
// Bytes that are not UTF-8 are replaced (U+FFFD), as sentencepiece's normaliser does.
constexpr const char* kEncode = R"(import os, sys, sentencepiece
p = sentencepiece.SentencePieceProcessor(model_file=sys.argv[1])
lines = sys.stdin.buffer.read().decode("utf-8", "replace").split("\n")
if lines[-1] == "": lines.pop()
try: ids = p.encode(lines, num_threads=os.cpu_count() or 1)
except TypeError: ids = p.encode(lines)
sys.stdout.write("".join(" ".join(map(str, line)) + "\n" for line in ids)))";

constexpr const char* kDecode = R"(import sys, sentencepiece
p = sentencepiece.SentencePieceProcessor(model_file=sys.argv[1])
out = sys.stdout.buffer
for line in sys.stdin.read().split("\n")[:-1]:
    out.write(p.decode([int(i) for i in line.split()]).encode("utf-8") + b"\n"))";

// spm_train's "--key=value" flags as the trainer's keyword arguments.
constexpr const char* kTrain = R"(import sys, sentencepiece
sentencepiece.SentencePieceTrainer.train(**dict(a[2:].split("=", 1) for a in sys.argv[1:])))";

}  // namespace

SentencePieceRunner sentencepiece_runner() {
  if (const char* chosen = std::getenv("REACH_SENTENCEPIECE"); chosen != nullptr && *chosen) {
    const std::string name = chosen;
    if (name == "programs") return SentencePieceRunner::programs;
    if (name == "python") return SentencePieceRunner::python;
    throw std::invalid_argument("REACH_SENTENCEPIECE must be 'programs' or 'python', got '" + name +
                                "'");
  }
  static const int found = [] {
    if (succeeds("command -v spm_encode")) return 0;
    if (succeeds(quoted(python()) + " -c 'import sentencepiece'")) return 1;
    return -1;
  }();
  if (found == 0) return SentencePieceRunner::programs;
  if (found == 1) return SentencePieceRunner::python;
  throw std::runtime_error(
      "sentencepiece: neither Debian's spm_encode (package sentencepiece) nor Python's module (" +
      python() +
      " -c 'import sentencepiece' failed; pip install sentencepiece, or set "
      "REACH_PYTHON to a Python that has it) is available");
}

std::string to_string(SentencePieceRunner runner) {
  return runner == SentencePieceRunner::programs ? "programs" : "python";
}

std::string sentencepiece_encode_command(SentencePieceRunner runner,
                                         const std::filesystem::path& model) {
  if (runner == SentencePieceRunner::programs) {
    return std::string("spm_encode --output_format=id --model=").append(quoted(model.string()));
  }
  return quoted(python()) + " -c " + quoted(kEncode) + " " + quoted(model.string());
}

std::string sentencepiece_decode_command(SentencePieceRunner runner,
                                         const std::filesystem::path& model) {
  if (runner == SentencePieceRunner::programs) {
    return std::string("spm_decode --input_format=id --model=").append(quoted(model.string()));
  }
  return quoted(python()) + " -c " + quoted(kDecode) + " " + quoted(model.string());
}

std::string sentencepiece_train_command(SentencePieceRunner runner,
                                        const std::vector<std::string>& flags) {
  // Appended piece by piece: GCC 12 warns falsely (-Wrestrict) on "literal" + std::string&&.
  std::string command = "spm_train";
  if (runner == SentencePieceRunner::python) {
    command = quoted(python());
    command.append(" -c ").append(quoted(kTrain));
  }
  for (const auto& flag : flags) command.append(" ").append(quoted(flag));
  return command;
}

}  // namespace reach::data
