// How reach runs sentencepiece: out of process (libsentencepiece and LibTorch link two protobuf
// runtimes that crash in one process), through Debian's spm_encode / spm_decode programs, or
// through Python's sentencepiece module where the programs are absent (the GPU machine has
// the module, not the programs). Both read text (or ids) line by line on stdin and print one
// line per input line, so the tokenizer cannot tell them apart; a test pins that they agree.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace reach::data {

enum class SentencePieceRunner { programs, python };

// REACH_SENTENCEPIECE=programs|python chooses; unset, the programs when spm_encode is on PATH,
// else Python ($REACH_PYTHON, default python3) when it imports sentencepiece; else throws,
// naming both ways to get one.
SentencePieceRunner sentencepiece_runner();
std::string to_string(SentencePieceRunner runner);

// Shell commands: text on stdin -> one line of space-separated ids per input line, and ids
// (one line per text line) -> the text lines.
std::string sentencepiece_encode_command(SentencePieceRunner runner,
                                         const std::filesystem::path& model);
std::string sentencepiece_decode_command(SentencePieceRunner runner,
                                         const std::filesystem::path& model);
// spm_train's flags ("--input=PATH", "--vocab_size=N", ...; values may hold spaces), as a
// command.
std::string sentencepiece_train_command(SentencePieceRunner runner,
                                        const std::vector<std::string>& flags);

}  // namespace reach::data
