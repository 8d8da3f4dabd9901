#include "io/safetensors.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace reach::io {
namespace {

constexpr uint64_t kMaxHeader = 100ull * 1024 * 1024;

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error("safetensors: " + what);
}

bool checked_mul(int64_t a, int64_t b, int64_t* out) { return !__builtin_mul_overflow(a, b, out); }

}  // namespace

int64_t dtype_size(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" ||
      dtype == "F8_E5M2") {
    return 1;
  }
  throw std::invalid_argument("unknown safetensors dtype '" + dtype + "'");
}

void write_safetensors(const std::string& path, const SafetensorsFile& file) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!file.metadata.empty()) header["__metadata__"] = file.metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : file.tensors) {
    int64_t elements = 1;
    for (int64_t d : t.shape) {
      if (d < 0 || !checked_mul(elements, d, &elements)) fail("bad shape for '" + name + "'");
    }
    if (static_cast<uint64_t>(elements * dtype_size(t.dtype)) != t.data.size()) {
      fail("tensor '" + name + "' has " + std::to_string(t.data.size()) +
           " bytes, shape and dtype need " + std::to_string(elements * dtype_size(t.dtype)));
    }
    header[name] = {
        {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.data.size()}}};
    offset += t.data.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // align the data section to 8 bytes
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create '" + path + "': " + std::strerror(errno));
  auto write_all = [&](const void* data, size_t size) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (size > 0) {
      const ssize_t n = ::write(fd, p, size);
      if (n < 0) {
        const std::string err = std::strerror(errno);
        ::close(fd);
        throw std::runtime_error("cannot write '" + path + "': " + err);
      }
      p += n;
      size -= static_cast<size_t>(n);
    }
  };
  uint8_t length[8];
  const uint64_t header_size = text.size();
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(header_size >> (8 * i));
  write_all(length, 8);
  write_all(text.data(), text.size());
  for (const auto& [name, t] : file.tensors) write_all(t.data.data(), t.data.size());
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    throw std::runtime_error("cannot flush '" + path + "': " + std::strerror(errno));
  }
}

SafetensorsFile parse_safetensors(const uint8_t* bytes, size_t size) {
  if (size < 8) fail("file is " + std::to_string(size) + " bytes, shorter than its 8-byte header");
  uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  if (header_size > kMaxHeader) fail("header length " + std::to_string(header_size) + " too large");
  if (header_size > size - 8) fail("header length runs past the end of the file");
  const uint8_t* data = bytes + 8 + header_size;
  const uint64_t data_size = size - 8 - header_size;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes + 8, bytes + 8 + header_size);
  } catch (const nlohmann::json::exception& e) {
    fail(std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!header.is_object()) fail("header is not a JSON object");
  SafetensorsFile file;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail("__metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) fail("__metadata__ value of '" + k + "' is not a string");
        file.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets")) {
      fail("entry '" + name + "' needs dtype, shape and data_offsets");
    }
    const auto& dtype = entry["dtype"];
    const auto& shape = entry["shape"];
    const auto& offsets = entry["data_offsets"];
    if (!dtype.is_string()) fail("dtype of '" + name + "' is not a string");
    RawTensor t;
    t.dtype = dtype.get<std::string>();
    int64_t element_size = 0;
    try {
      element_size = dtype_size(t.dtype);
    } catch (const std::invalid_argument&) {
      fail("tensor '" + name + "' has unknown dtype '" + t.dtype + "'");
    }
    if (!shape.is_array()) fail("shape of '" + name + "' is not an array");
    int64_t bytes_needed = element_size;
    for (const auto& d : shape) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) {
        fail("shape of '" + name + "' has a non-integer or negative dimension");
      }
      t.shape.push_back(d.get<int64_t>());
      if (!checked_mul(bytes_needed, t.shape.back(), &bytes_needed)) {
        fail("shape of '" + name + "' overflows");
      }
    }
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      fail("data_offsets of '" + name + "' must be two non-negative integers");
    }
    const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      fail("data_offsets of '" + name + "' [" + std::to_string(begin) + ", " + std::to_string(end) +
           ") fall outside the " + std::to_string(data_size) + "-byte data section");
    }
    if (end - begin != static_cast<uint64_t>(bytes_needed)) {
      fail("tensor '" + name + "' spans " + std::to_string(end - begin) + " bytes but " + t.dtype +
           " x shape needs " + std::to_string(bytes_needed));
    }
    t.data.assign(data + begin, data + end);
    ranges.emplace_back(begin, end);
    file.tensors.emplace(name, std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  uint64_t cursor = 0;
  for (auto [b, e] : ranges) {
    if (b < cursor) fail("tensor byte ranges overlap");
    if (b > cursor) fail("tensor byte ranges leave a hole");
    cursor = e;
  }
  if (cursor != data_size) fail("data section has trailing bytes not owned by any tensor");
  return file;
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec)) {
    throw std::runtime_error("'" + path + "' is not a regular file (a directory?)");
  }
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error("cannot open '" + path + "'");
  const auto end = in.tellg();
  if (end < 0) throw std::runtime_error("cannot read the size of '" + path + "'");
  const auto size = static_cast<size_t>(end);
  std::vector<uint8_t> bytes(size);
  in.seekg(0);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size))) {
    throw std::runtime_error("cannot read '" + path + "'");
  }
  try {
    return parse_safetensors(bytes.data(), bytes.size());
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
}

}  // namespace reach::io
