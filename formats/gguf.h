// GGUF files (llama.cpp's model format, versions 2 and 3): read, memory-mapped and validated.
//
// Layout (little-endian; ggml/docs/gguf.md):
//   u32 magic "GGUF", u32 version, u64 tensor_count, u64 metadata_kv_count
//   metadata_kv_count × { string key, u32 value_type, value }
//   tensor_count × { string name, u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset }
//   padding to general.alignment (default 32), then the data section
// A string is a u64 length and that many bytes (not NUL-terminated); an array value is a u32
// element type, a u64 count and the elements (arrays may nest). dims[0] is the fastest-varying
// dimension: a [rows, cols] matrix in torch's order is stored with dims [cols, rows].
//
// Validation happens before anything is used, and every count is bounded by the bytes left in the
// file before it is allocated: magic and version, every length against the file, value types,
// array nesting (at most kMaxGgufArrayDepth), duplicate keys and tensor names, the alignment, each
// tensor's type, rank (≤ 4, as ggml), dims (> 0, rows a whole number of blocks), and that every
// tensor's bytes are aligned, inside the data section, and do not overlap another's.
// docs/checkpoints.md lists every rule.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "formats/gguf_quants.h"
#include "subq/tensor.h"

namespace subq::formats {

class MappedFile;

inline constexpr int kMaxGgufArrayDepth = 8;
inline constexpr int kMaxGgufDims = 4;  // GGML_MAX_DIMS

// A metadata value. Integers keep their sign (u64 above INT64_MAX is refused); floats are
// doubles. Arrays of numbers and booleans are kept flat (8 bytes an element), arrays of strings
// as strings, and only arrays of arrays as values.
struct GgufValue;
struct GgufValue {
  uint32_t type = 0;       // gguf_type of the file: 0 u8 .. 12 f64 (see gguf_value_type_name)
  uint32_t elem_type = 0;  // for an array (type 9): the type of its elements
  std::variant<int64_t, double, std::string, std::vector<int64_t>, std::vector<double>,
               std::vector<std::string>, std::vector<GgufValue>>
      value;
};
// Bounds on what metadata may hold, so that a small file cannot ask for a huge allocation: the
// largest real arrays are tokenizer vocabularies and merges (a few hundred thousand entries).
inline constexpr uint64_t kMaxGgufArrayElements = uint64_t{1} << 24;
inline constexpr uint64_t kMaxGgufMetadataElements = uint64_t{1} << 26;
std::string_view gguf_value_type_name(uint32_t type);

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // as stored: dims[0] fastest
  GgmlType type = GgmlType::kF32;
  std::string_view type_name;
  uint64_t offset = 0;  // relative to the data section
  uint64_t nbytes = 0;
  int64_t numel() const;
  // dims reversed: the torch / safetensors order, [rows, cols] for a matrix.
  std::vector<int64_t> shape() const;
};

struct GgufHeader {
  uint32_t version = 0;
  uint64_t alignment = 32;
  uint64_t data_start = 0;
  std::map<std::string, GgufValue> metadata;
  std::vector<GgufTensorInfo> tensors;  // in file order
  const GgufTensorInfo* find(std::string_view name) const;
  const GgufValue* get(std::string_view key) const;
};

// Parses and validates a whole GGUF file held in memory. Every error is a subq::Error whose
// message starts with `source`. The file reader and the fuzz target both come through here.
GgufHeader parse_gguf(const void* data, size_t size, std::string_view source);

// Typed metadata look-ups; each throws "<source>: <key>: ..." naming what was expected.
// Unsigned and signed integer types are both accepted where an integer is wanted.
class GgufMetadata {
 public:
  GgufMetadata(const GgufHeader& header, std::string source)
      : header_(header), source_(std::move(source)) {}
  bool has(std::string_view key) const { return header_.get(key) != nullptr; }
  int64_t integer(std::string_view key) const;
  int64_t integer_or(std::string_view key, int64_t fallback) const;
  double number(std::string_view key) const;  // an integer or a float
  double number_or(std::string_view key, double fallback) const;
  bool boolean_or(std::string_view key, bool fallback) const;
  std::string string(std::string_view key) const;
  std::string string_or(std::string_view key, std::string fallback) const;
  std::vector<std::string> strings(std::string_view key) const;  // an array of strings
  std::vector<int64_t> integers(std::string_view key) const;     // an array of integers
  std::vector<double> numbers(std::string_view key) const;       // an array of floats

 private:
  const GgufValue& at(std::string_view key) const;
  [[noreturn]] void fail(std::string_view key, std::string_view what, const GgufValue& v) const;
  const GgufHeader& header_;
  std::string source_;
};

// A GGUF file mapped read-only, parsed and validated.
class GgufFile {
 public:
  static std::shared_ptr<const GgufFile> open(const std::filesystem::path& path);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const GgufHeader& header() const { return header_; }
  GgufMetadata metadata() const { return GgufMetadata(header_, path_.string()); }
  // Throws "<path>: no tensor '<name>'".
  const GgufTensorInfo& tensor(std::string_view name) const;
  const std::byte* data(const GgufTensorInfo& t) const {
    return base_ + header_.data_start + t.offset;
  }
  // The tensor dequantized to f32, in torch's order (shape()). Throws naming the tensor and its
  // type when subq does not dequantize that type.
  Tensor to_f32(const GgufTensorInfo& t) const;

 private:
  GgufFile() = default;
  std::filesystem::path path_;
  std::unique_ptr<const MappedFile> mapping_;
  const std::byte* base_ = nullptr;
  GgufHeader header_;
};

}  // namespace subq::formats
