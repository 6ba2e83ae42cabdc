#include "formats/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include "subq/error.h"

namespace subq::formats {

MappedFile::MappedFile(const std::filesystem::path& path) {
  const std::string name = path.string();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  SUBQ_CHECK(fd >= 0, name, ": cannot open: ", std::system_category().message(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(detail::concat(name, ": not a regular file"));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ == 0) {
    ::close(fd);
    return;
  }
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);
  SUBQ_CHECK(p != MAP_FAILED, name, ": mmap failed: ", std::system_category().message(err));
  base_ = static_cast<const std::byte*>(p);
}

MappedFile::~MappedFile() {
  if (base_) ::munmap(const_cast<std::byte*>(base_), size_);
}

}  // namespace subq::formats
