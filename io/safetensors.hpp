// safetensors files: an 8-byte little-endian header length, a JSON header naming each
// tensor's dtype, shape and [begin, end) byte range in the data section, then the data.
// Readable by Python's `safetensors` package. Torch-free: tensors are raw bytes here.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace reach::io {

struct RawTensor {
  std::string dtype;  // "F32", "F64", "BF16", "F16", "I64", "I32", "U8", ...
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

struct SafetensorsFile {
  std::map<std::string, RawTensor> tensors;
  std::map<std::string, std::string> metadata;
};

// Bytes per element of a dtype name; throws std::invalid_argument for unknown names.
int64_t dtype_size(const std::string& dtype);

// Writes atomically enough for a checkpoint directory that is itself renamed into place;
// fsyncs the file. Throws std::runtime_error on I/O failure.
void write_safetensors(const std::string& path, const SafetensorsFile& file);

// Parses from memory with checked arithmetic: rejects headers over 100 MB or past the end,
// invalid JSON, unknown dtypes, negative or overflowing shapes, byte ranges that are out of
// the data section, overlap, leave holes, or disagree with dtype x shape.
// Throws std::runtime_error("safetensors: ...") naming the problem.
SafetensorsFile parse_safetensors(const uint8_t* bytes, size_t size);
SafetensorsFile read_safetensors(const std::string& path);

}  // namespace reach::io
