// What this process and this machine hold in memory, from /proc (Linux).
//
// Peak RSS is VmHWM of /proc/self/status: this process's own high-water mark. getrusage's
// ru_maxrss is not: it survives exec, so a command started by a larger parent (a test runner,
// a shell that ran something big) reports the parent's peak.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace subq {

// VmHWM and VmRSS of this process, in bytes (0 if /proc cannot be read).
uint64_t peak_rss_bytes();
uint64_t current_rss_bytes();
// MemAvailable of /proc/meminfo in bytes: what can be allocated without swapping (0 if unknown).
uint64_t available_memory_bytes();

// Throws subq::Error "<what> needs X GiB, but only Y GiB of memory is available" when `bytes`
// exceeds what is available (a margin of 10% is kept for everything else); does nothing when
// the machine's memory is unknown. For checks before a large allocation.
void check_fits_in_memory(uint64_t bytes, const std::string& what);

// `bytes` rounded up to 2 MB, 2 MB aligned, with huge pages asked for (MADV_HUGEPAGE, a hint):
// a long stream over it (decode's weights, the bandwidth bench) then restarts no prefetcher at
// each 4 KB page and misses the TLB less. Free with std::free; nullptr when it cannot be had.
void* allocate_on_huge_pages(size_t bytes);

}  // namespace subq
