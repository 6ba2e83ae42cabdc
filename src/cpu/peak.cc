// The machine's fp32 FMA peak: every efficiency figure `subq bench` prints is a ratio to it.
//
// Each thread runs independent FMA chains on registers only (no memory traffic), enough of them
// to cover FMA latency x throughput on any target: 12 chains x 2 pipes x 4-5 cycles.
#include "src/cpu/peak.h"

#include <atomic>
#include <chrono>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/cpu/peak.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/highway.h"
#include "subq/threads.h"

HWY_BEFORE_NAMESPACE();
namespace subq::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Runs `iters` rounds of 12 independent vector FMAs; returns the FLOPs done. The result is
// folded into `sink` so the compiler cannot drop the work.
double FmaLoop(int64_t iters, float* sink) {
  const hn::ScalableTag<float> d;
  constexpr int kChains = 12;
  using V = hn::Vec<decltype(d)>;
  V acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = hn::Set(d, 0.001f * static_cast<float>(c));
  const V mul = hn::Set(d, 0.999999f), add = hn::Set(d, 1e-7f);
  for (int64_t i = 0; i < iters; ++i) {
    for (int c = 0; c < kChains; ++c) acc[c] = hn::MulAdd(acc[c], mul, add);
  }
  V sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = hn::Add(sum, acc[c]);
  *sink += hn::GetLane(sum);
  return 2.0 * kChains * static_cast<double>(hn::Lanes(d)) * static_cast<double>(iters);
}

}  // namespace subq::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace subq::cpu {

HWY_EXPORT(FmaLoop);

double measure_peak_gflops(int threads, double seconds) {
  // All threads run the loop at once for about `seconds`; the figure is total FLOPs over the
  // wall time of the whole parallel region, best of five rounds (peak is a maximum, so the best
  // round is the least disturbed one; on a shared VM a whole round can lose a core).
  float sink = 0;
  HWY_DYNAMIC_DISPATCH(FmaLoop)(1 << 16, &sink);  // warm up, and let the clock ramp
  const int64_t iters = 1 << 20;
  double best = 0;
  for (int round = 0; round < 5; ++round) {
    std::vector<double> flops(threads, 0.0);
    std::vector<float> sinks(threads, 0.f);
    const auto t0 = std::chrono::steady_clock::now();
    const auto deadline = t0 + std::chrono::duration<double>(seconds / 5);
    parallel_for(threads, [&](int64_t t, int) {
      while (std::chrono::steady_clock::now() < deadline)
        flops[t] += HWY_DYNAMIC_DISPATCH(FmaLoop)(iters, &sinks[t]);
    });
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double total = 0;
    for (double f : flops) total += f;
    for (float s : sinks) sink += s;
    best = std::max(best, total / dt * 1e-9);
  }
  if (sink == 12345.f) best += 0;  // keep `sink` alive
  return best;
}

}  // namespace subq::cpu
#endif
