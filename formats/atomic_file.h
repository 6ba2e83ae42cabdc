// Atomic file replacement: write a temporary file next to the target, fsync it, rename it over
// the target. Readers see the old file or the new one, never a half-written one, and a crash
// or an exception leaves the old file in place.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace subq::formats {

// Writes `<target>.tmp.<pid>` in the target's directory (a rename is only atomic within one
// file system) and renames it over `target` on commit(). Destroying an uncommitted AtomicFile
// removes the temporary file. Every failure throws subq::Error naming the target.
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path target);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t bytes);
  void write(std::string_view s) { write(s.data(), s.size()); }
  // Flushes, fsyncs, closes, renames over the target and fsyncs the directory (so that the
  // rename itself survives a power cut).
  void commit();

  const std::filesystem::path& target() const { return target_; }
  const std::filesystem::path& temp_path() const { return temp_; }

 private:
  void flush_buffer();
  [[noreturn]] void fail(std::string_view what, int err);

  std::filesystem::path target_;
  std::filesystem::path temp_;
  int fd_ = -1;
  bool committed_ = false;
  // Small writes (headers, many tiny tensors) are gathered here to save syscalls.
  std::vector<char> buffer_;
};

// The whole file in one call.
void write_file_atomically(const std::filesystem::path& target, std::string_view contents);

// Reads a whole file; throws subq::Error naming it when it cannot be read.
std::string read_file(const std::filesystem::path& path);

}  // namespace subq::formats
