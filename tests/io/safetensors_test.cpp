// safetensors reader/writer: round trip, and a matrix of hand-made corrupt files that must
// each fail with a clear message (never crash, never return garbage).
#include "io/safetensors.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

namespace reach::io {
namespace {

std::vector<uint8_t> file_bytes(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> out(8 + header.size() + data_bytes);
  for (size_t i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(header.size() >> (8 * i));
  for (size_t i = 0; i < header.size(); ++i) out[8 + i] = static_cast<uint8_t>(header[i]);
  for (size_t i = 0; i < data_bytes; ++i) {
    out[8 + header.size() + i] = static_cast<uint8_t>(i * 37 + 11);
  }
  return out;
}

void expect_rejected(const std::vector<uint8_t>& bytes, const std::string& needle) {
  try {
    parse_safetensors(bytes.data(), bytes.size());
    ADD_FAILURE() << "accepted a file that should fail with '" << needle << "'";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Safetensors, RoundTripsTensorsAndMetadata) {
  SafetensorsFile f;
  f.metadata["format"] = "reach";
  RawTensor a{"F32", {2, 3}, std::vector<uint8_t>(24)};
  for (size_t i = 0; i < 24; ++i) a.data[i] = static_cast<uint8_t>(i * 7 + 1);
  RawTensor b{"I64", {}, std::vector<uint8_t>(8, 3)};
  RawTensor c{"F64", {0}, {}};
  f.tensors = {{"layer.weight", a}, {"step", b}, {"empty", c}};
  const auto path = (std::filesystem::temp_directory_path() / "reach_st_test.safetensors").string();
  write_safetensors(path, f);
  const auto g = read_safetensors(path);
  EXPECT_EQ(g.metadata, f.metadata);
  ASSERT_EQ(g.tensors.size(), 3u);
  EXPECT_EQ(g.tensors.at("layer.weight").shape, a.shape);
  EXPECT_EQ(g.tensors.at("layer.weight").data, a.data);
  EXPECT_EQ(g.tensors.at("step").dtype, "I64");
  EXPECT_TRUE(g.tensors.at("empty").data.empty());
  std::filesystem::remove(path);
}

TEST(Safetensors, RejectsCorruptFiles) {
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  ASSERT_NO_THROW(parse_safetensors(file_bytes(ok, 8).data(), 8 + ok.size() + 8));
  expect_rejected({1, 2, 3}, "shorter than its 8-byte header");
  auto huge = file_bytes(ok, 8);
  huge[7] = 0x7f;
  expect_rejected(huge, "too large");
  auto past = file_bytes(ok, 8);
  past[0] = static_cast<uint8_t>(ok.size() + 100);
  expect_rejected(past, "past the end");
  expect_rejected(file_bytes("{not json", 0), "not valid JSON");
  expect_rejected(file_bytes("[1,2]", 0), "not a JSON object");
  expect_rejected(file_bytes(ok, 4), "outside");  // truncated data
  expect_rejected(file_bytes(ok, 12), "trailing bytes");
  expect_rejected(file_bytes(R"({"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", 8),
                  "unknown dtype");
  expect_rejected(file_bytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
                  "needs 12");
  expect_rejected(file_bytes(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
                  "negative");
  expect_rejected(
      file_bytes(
          R"({"a":{"dtype":"U8","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})",
          8),
      "overflows");
  expect_rejected(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8),
                  "outside");
  expect_rejected(
      file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]}})", 8),
      "outside");
  expect_rejected(
      file_bytes(
          R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
          6),
      "overlap");
  expect_rejected(
      file_bytes(
          R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
          6),
      "hole");
  expect_rejected(file_bytes(R"({"a":{"dtype":"F32","shape":[2]}})", 8), "needs dtype");
  expect_rejected(file_bytes(R"({"__metadata__":{"k":1}})", 0), "not a string");
}

TEST(Safetensors, MissingFileNamesThePath) {
  try {
    read_safetensors("/nonexistent/model.safetensors");
    ADD_FAILURE();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model.safetensors"), std::string::npos);
  }
}

}  // namespace
}  // namespace reach::io

namespace reach::io {
namespace {

// Replays the fuzzer's corpus (scripts/fuzz-safetensors): each input parses or fails cleanly.
TEST(Safetensors, FuzzCorpusRegressions) {
  const std::filesystem::path dir = std::string(REACH_SOURCE_DIR) + "/tests/io/safetensors_corpus";
  int files = 0, parsed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(entry.path(), std::ios::binary);
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
    ++files;
    try {
      const auto f = parse_safetensors(bytes.data(), bytes.size());
      ++parsed;
      for (const auto& [name, t] : f.tensors) {
        int64_t elements = 1;
        for (int64_t d : t.shape) elements *= d;
        EXPECT_EQ(static_cast<size_t>(elements * dtype_size(t.dtype)), t.data.size())
            << entry.path();
      }
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("safetensors: "), std::string::npos) << entry.path();
    }
  }
  EXPECT_GE(files, 4);
  EXPECT_GE(parsed, 3);  // the valid seeds still parse
}

}  // namespace
}  // namespace reach::io
