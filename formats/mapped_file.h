// A whole file mapped read-only (PROT_READ, MAP_PRIVATE): the parsers' views alias the page
// cache, nothing is copied, and a stray write through a view faults instead of changing the file
// on disk. Shared by the safetensors and GGUF readers.
#pragma once

#include <cstddef>
#include <filesystem>

namespace subq::formats {

class MappedFile {
 public:
  // Throws subq::Error "<path>: cannot open: ..." / "not a regular file" / "mmap failed".
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return base_; }  // nullptr for an empty file
  size_t size() const { return size_; }

 private:
  const std::byte* base_ = nullptr;
  size_t size_ = 0;
};

}  // namespace subq::formats
