#include "subq/memory.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "subq/error.h"

namespace subq {
namespace {

// The value of "<key>: <n> kB" in a /proc file, in bytes.
uint64_t proc_kib_field(const char* file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, key.size(), key) != 0 || line.size() <= key.size() ||
        line[key.size()] != ':')
      continue;
    std::istringstream fields(line.substr(key.size() + 1));
    uint64_t kib = 0;
    fields >> kib;
    return kib * 1024;
  }
  return 0;
}

std::string gib(uint64_t bytes) {
  std::ostringstream s;
  s.precision(3);
  s << static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0);
  return s.str();
}

}  // namespace

uint64_t peak_rss_bytes() {
  return proc_kib_field("/proc/self/status", "VmHWM");
}
uint64_t current_rss_bytes() {
  return proc_kib_field("/proc/self/status", "VmRSS");
}
uint64_t available_memory_bytes() {
  return proc_kib_field("/proc/meminfo", "MemAvailable");
}

void check_fits_in_memory(uint64_t bytes, const std::string& what) {
  const uint64_t available = available_memory_bytes();
  if (available == 0) return;
  SUBQ_CHECK(bytes <= available / 10 * 9, what, " needs ", gib(bytes), " GiB, but only ",
             gib(available), " GiB of memory is available");
}

void* allocate_on_huge_pages(size_t bytes) {
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t rounded = (std::max<size_t>(bytes, 1) + kHuge - 1) / kHuge * kHuge;
  void* p = std::aligned_alloc(kHuge, rounded);
  if (p) madvise(p, rounded, MADV_HUGEPAGE);  // a hint; may be ignored
  return p;
}

}  // namespace subq
