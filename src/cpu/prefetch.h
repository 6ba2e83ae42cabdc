// Software prefetch for streaming reads (matvec, the bandwidth bench).
//
// The hardware's streaming prefetchers stop at each 4 KB page boundary (even on huge pages) and
// restart only after a few misses on the next page; asking for the lines one page ahead keeps
// the stream going. Measured on a 113 MB bf16 matrix, 2 threads (Sapphire Rapids): 20.4-20.7
// GB/s without, 21.5-27.6 with 4 KB; 3 KB and 6 KB ahead were no better than none. Every line is
// asked for, not one per loop iteration (which covers 2 or 4 lines): on Zen 5, 2 threads, the
// default teacher's decode weights through matvec measured (medians of 12 alternated runs) bf16
// 7.2 -> 6.7 ms and f32 14.1 -> 13.1 ms per token.
#pragma once

#include <cstdint>

namespace subq::cpu {

inline constexpr int64_t kPrefetchBytes = 4096;
inline constexpr int64_t kLineBytes = 64;

// Prefetches the lines of [p, p + bytes), kPrefetchBytes ahead.
inline void prefetch_ahead(const void* p, int64_t bytes) {
  const char* ahead = static_cast<const char*>(p) + kPrefetchBytes;
  for (int64_t b = 0; b < bytes; b += kLineBytes) __builtin_prefetch(ahead + b);
}

}  // namespace subq::cpu
