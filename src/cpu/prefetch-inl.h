// Software prefetch for streaming reads (matvec, the bandwidth bench, exact attention's
// decode), per SIMD target.
//
// The hardware's streaming prefetchers stop at each 4 KB page boundary (even on huge pages) and
// restart only after a few misses on the next page; asking for the lines one page ahead keeps
// the stream going. Measured on a 113 MB bf16 matrix, 2 threads (Sapphire Rapids): 20.4-20.7
// GB/s without, 21.5-27.6 with 4 KB; 3 KB and 6 KB ahead were no better than none. Every line is
// asked for, not one per loop iteration (which covers 2 or 4 lines): on Zen 5, 2 threads, the
// default teacher's decode weights through matvec measured (medians of 12 alternated runs) bf16 7.2
// -> 6.7 ms and f32 14.1 -> 13.1 ms per token. Into L2 (prefetcht1) instead of L1 measured 5-10 %
// slower there.
//
// Defined in each target's namespace, as the other -inl.h files: a plain inline function in a
// header that the per-target passes include (tried first) was compiled with no prefetch
// instruction at all in matvec.cc (GCC 12), though it was kept in bandwidth.cc.
#if defined(SUBQ_CPU_PREFETCH_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SUBQ_CPU_PREFETCH_INL_H_
#undef SUBQ_CPU_PREFETCH_INL_H_
#else
#define SUBQ_CPU_PREFETCH_INL_H_
#endif

#include <cstdint>

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace subq::cpu::HWY_NAMESPACE {

constexpr int64_t kPrefetchBytes = 4096;
constexpr int64_t kLineBytes = 64;

// Prefetches the lines of [p, p + bytes).
HWY_INLINE void PrefetchLines(const void* p, int64_t bytes) {
  for (int64_t b = 0; b < bytes; b += kLineBytes)
    __builtin_prefetch(static_cast<const char*>(p) + b);
}

// Prefetches the lines of [p, p + bytes), kPrefetchBytes ahead.
HWY_INLINE void PrefetchAhead(const void* p, int64_t bytes) {
  PrefetchLines(static_cast<const char*>(p) + kPrefetchBytes, bytes);
}

}  // namespace subq::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // SUBQ_CPU_PREFETCH_INL_H_
