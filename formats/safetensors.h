// safetensors files: read (memory-mapped, validated) and write (deterministic, atomic).
//
// Format (https://github.com/huggingface/safetensors): an 8-byte little-endian u64 N, N bytes of
// JSON header, then the data section. The header maps each tensor name to
//   {"dtype": "F32", "shape": [4096], "data_offsets": [begin, end]}
// with offsets relative to the data section, plus an optional "__metadata__" map of strings.
// Validation follows the reference (Rust) reader: the tensors, sorted by offset, must tile the
// data section exactly, without gaps or overlaps, and each must hold dtype x shape bytes.
// docs/checkpoints.md lists every rule.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "subq/dtype.h"
#include "subq/tensor.h"

namespace subq::formats {

class MappedFile;

// The reference reader refuses headers above 100 MB: a header that large is a corrupt length.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// "F32", "BF16", ...: the safetensors spelling of a subq dtype, and back. The reverse throws
// subq::Error for other names, saying "unsupported" for the safetensors dtypes subq does not
// read (BOOL, U8, I8, ..., F8_E4M3) and "unknown" for anything else.
std::string_view safetensors_dtype_name(DType dt);
DType dtype_from_safetensors_name(std::string_view name, std::string_view context);

// One tensor of a header, validated.
struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // data_offsets, relative to the start of the data section
  uint64_t end = 0;
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

// A validated header: entries sorted by name, metadata, and where the data section starts.
struct SafetensorsHeader {
  std::vector<SafetensorsEntry> tensors;
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // 8 + N
  const SafetensorsEntry* find(std::string_view name) const;
};

// Parses and validates a whole safetensors file held in memory (`size` bytes at `data`). Every
// error is a subq::Error whose message starts with `source` (the file name). The file reader
// and the fuzz target both come through here.
SafetensorsHeader parse_safetensors(const void* data, size_t size, std::string_view source);

// A safetensors file mapped read-only. Views point into the mapping, so they are valid while the
// SafetensorsFile lives (hold the shared_ptr) and must not be written through.
class SafetensorsFile {
 public:
  static std::shared_ptr<const SafetensorsFile> open(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  const std::vector<SafetensorsEntry>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  bool contains(std::string_view name) const { return header_.find(name) != nullptr; }
  // Throws "<path>: no tensor '<name>'".
  const SafetensorsEntry& entry(std::string_view name) const;

  // The raw bytes of a tensor, inside the mapping.
  const std::byte* data(const SafetensorsEntry& e) const {
    return base_ + header_.data_start + e.begin;
  }
  // A contiguous view into the mapping. Throws when the rank exceeds subq::kMaxRank or the data
  // is not aligned to its element size (only possible in files from writers that do not pad the
  // header to 8 bytes, as the reference writer does); to_f32 and copy work in both cases.
  TensorView view(std::string_view name) const;
  // An owned copy, converted to f32 (float dtypes only).
  Tensor to_f32(std::string_view name) const;
  // An owned copy in the stored dtype.
  Tensor copy(std::string_view name) const;

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  std::unique_ptr<const MappedFile> mapping_;
  const std::byte* base_ = nullptr;  // mapping_->data()
  SafetensorsHeader header_;
};

// What to write: a contiguous array of `shape` elements of `dtype` at `data`.
struct TensorToSave {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};

struct SafetensorsWriteOptions {
  // Float tensors (f32, bf16, f16, f64) are converted to this dtype; integer tensors are stored
  // as they are. nullopt: every tensor keeps its dtype.
  std::optional<DType> float_dtype;
  std::map<std::string, std::string> metadata;
};

// The bytes a tensor takes on disk with these options.
uint64_t stored_nbytes(const TensorToSave& t, const SafetensorsWriteOptions& options);

// Writes the file through `sink` in order. Deterministic: tensors are laid out as the reference
// writer does (by descending element size, then name, so every tensor is aligned), the header
// lists "__metadata__" first, then the tensors in data order, in compact JSON padded with spaces
// to a multiple of 8 bytes. Validates names, shapes and dtypes first; throws naming `dest`.
void write_safetensors(const std::vector<TensorToSave>& tensors,
                       const SafetensorsWriteOptions& options, std::string_view dest,
                       const std::function<void(const void*, size_t)>& sink);
// The whole file in memory (tests, fuzz seeds).
std::string serialize_safetensors(const std::vector<TensorToSave>& tensors,
                                  const SafetensorsWriteOptions& options = {});
// Atomically (model/atomic_file.h): the target is replaced only by a complete, synced file.
void save_safetensors(const std::filesystem::path& path, const std::vector<TensorToSave>& tensors,
                      const SafetensorsWriteOptions& options = {});

}  // namespace subq::formats
