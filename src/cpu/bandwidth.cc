// The machine's streaming-read bandwidth: decode figures in `subq bench` are a ratio to it.
//
// Each thread sums its slice of a buffer far larger than the last-level cache with four vector
// accumulators (enough loads in flight to saturate a core's share of the memory bus). The sum is
// kept, so the reads cannot be dropped. The buffer is on huge pages and the reads prefetch a
// page ahead, as decode's matvec does: the bound must be the best streaming read the machine
// gives, or decode would measure above 100 % of it (it did, 122 %, on Zen 5 without them).
#include "src/cpu/bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/cpu/bandwidth.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/highway.h"
#include "src/cpu/prefetch-inl.h"
#include "subq/error.h"
#include "subq/memory.h"
#include "subq/threads.h"

HWY_BEFORE_NAMESPACE();
namespace subq::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The sum of x[0, n) (n a multiple of 4 lanes).
float SumRead(const float* HWY_RESTRICT x, size_t n) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  size_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    PrefetchAhead(x + i, static_cast<int64_t>(4 * N * sizeof(float)));
    a0 = hn::Add(a0, hn::LoadU(d, x + i));
    a1 = hn::Add(a1, hn::LoadU(d, x + i + N));
    a2 = hn::Add(a2, hn::LoadU(d, x + i + 2 * N));
    a3 = hn::Add(a3, hn::LoadU(d, x + i + 3 * N));
  }
  float s = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
  for (; i < n; ++i) s += x[i];
  return s;
}

}  // namespace subq::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace subq::cpu {

HWY_EXPORT(SumRead);

double measure_read_bandwidth_gbs(int threads, size_t bytes) {
  const size_t n = bytes / sizeof(float);
  std::unique_ptr<float, void (*)(void*)> buffer(
      static_cast<float*>(allocate_on_huge_pages(n * sizeof(float))), std::free);
  SUBQ_CHECK(buffer != nullptr, "bench bandwidth: cannot allocate ", bytes, " bytes");
  float* data = buffer.get();
  // Written once in parallel, so the pages are resident (and spread as the reads will be).
  const size_t slice = (n / threads + 15) / 16 * 16;
  parallel_for(threads, [&](int64_t t, int) {
    const size_t begin = std::min(n, static_cast<size_t>(t) * slice);
    const size_t end = std::min(n, begin + slice);
    for (size_t i = begin; i < end; ++i) data[i] = 1e-6f;
  });
  std::vector<float> sums(threads, 0.f);
  double best = 0;
  for (int round = 0; round < 7; ++round) {
    const auto t0 = std::chrono::steady_clock::now();
    parallel_for(threads, [&](int64_t t, int) {
      const size_t begin = std::min(n, static_cast<size_t>(t) * slice);
      const size_t end = std::min(n, begin + slice);
      sums[t] += HWY_DYNAMIC_DISPATCH(SumRead)(data + begin, end - begin);
    });
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(n * sizeof(float)) / dt * 1e-9);
  }
  float keep = 0;
  for (float s : sums) keep += s;
  if (keep == 12345.f) best += 0;  // keep the sums alive
  return best;
}

}  // namespace subq::cpu
#endif
