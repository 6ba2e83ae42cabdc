#include "bench/harness.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <limits>
#include <map>
#include <sstream>

#include "src/cpu/bandwidth.h"
#include "src/cpu/peak.h"
#include "subq/error.h"
#include "subq/memory.h"
#include "subq/random.h"
#include "subq/threads.h"

namespace subq::bench {

Timing time_runs(const std::function<void()>& fn, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < std::max(reps, 1); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  Timing t;
  t.runs = static_cast<int>(ms.size());
  t.min_ms = ms.front();
  t.median_ms =
      ms.size() % 2 ? ms[ms.size() / 2] : 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]);
  return t;
}

double peak_rss_mib() {
  // VmHWM: this process's own peak (ru_maxrss survives exec and can be the parent's).
  return static_cast<double>(peak_rss_bytes()) / (1024.0 * 1024.0);
}

namespace {

// A machine figure measured once per thread count (with the pool set to that many) and cached.
double measured_once(std::map<int, double>& cache, int threads, double (*measure)(int)) {
  auto it = cache.find(threads);
  if (it != cache.end()) return it->second;
  const int saved = num_threads();
  set_num_threads(threads);
  const double v = measure(threads);
  set_num_threads(saved);
  cache[threads] = v;
  return v;
}

}  // namespace

double bandwidth_gbs(int threads) {
  static std::map<int, double> cache;
  return measured_once(cache, threads, [](int t) { return cpu::measure_read_bandwidth_gbs(t); });
}

double peak_gflops(int threads) {
  static std::map<int, double> cache;
  return measured_once(cache, threads, [](int t) { return cpu::measure_peak_gflops(t); });
}

void Reporter::add(const Row& r) {
  if (csv_) {
    if (!header_done_)
      std::printf(
          "op,impl,dtype,B,T,H,Hkv,D,causal,window,pass,threads,ms,gflops,peak_pct,peak_rss_mib,"
          "io_mib,K,V,mode\n");
    std::printf(
        "%s,%s,%s,%lld,%lld,%lld,%lld,%lld,%d,\"%s\",%s,%d,%.4f,%.2f,%.2f,%.1f,%.1f,%lld,%lld,%s\n",
        r.op.c_str(), r.impl.c_str(), r.dtype.c_str(), static_cast<long long>(r.B),
        static_cast<long long>(r.T), static_cast<long long>(r.H), static_cast<long long>(r.Hkv),
        static_cast<long long>(r.D), r.causal ? 1 : 0, r.window.c_str(), r.pass.c_str(), r.threads,
        r.ms, r.gflops, r.peak_pct, r.peak_rss_mib, r.io_mib,
        static_cast<long long>(r.K ? r.K : r.D), static_cast<long long>(r.V ? r.V : r.D),
        r.mode.c_str());
  } else {
    if (!header_done_)
      std::printf(
          "%-12s %-4s %-5s %3s %6s %3s %3s %4s %-6s %-8s %-4s %3s %10s %8s %6s %9s %8s %4s %4s "
          "%-9s\n",
          "op", "impl", "dtype", "B", "T", "H", "Hkv", "D", "causal", "window", "pass", "thr", "ms",
          "GFLOP/s", "%peak", "rss_MiB", "io_MiB", "K", "V", "mode");
    std::printf(
        "%-12s %-4s %-5s %3lld %6lld %3lld %3lld %4lld %-6s %-8s %-4s %3d %10.3f %8.1f %6.1f %9.1f "
        "%8.1f %4lld %4lld %-9s\n",
        r.op.c_str(), r.impl.c_str(), r.dtype.c_str(), static_cast<long long>(r.B),
        static_cast<long long>(r.T), static_cast<long long>(r.H), static_cast<long long>(r.Hkv),
        static_cast<long long>(r.D), r.causal ? "yes" : "no", r.window.c_str(), r.pass.c_str(),
        r.threads, r.ms, r.gflops, r.peak_pct, r.peak_rss_mib, r.io_mib,
        static_cast<long long>(r.K ? r.K : r.D), static_cast<long long>(r.V ? r.V : r.D),
        r.mode.c_str());
  }
  std::fflush(stdout);
  header_done_ = true;
}

std::vector<int> thread_counts(const std::string& s) {
  if (s.empty()) return {num_threads()};
  auto v = parse_int_list(s, "--threads");
  for (int t : v)
    SUBQ_CHECK_ARG(t >= 1 && t <= max_threads(), "subq bench", "--threads",
                   detail::concat("counts in [1, ", max_threads(), "]"), t);
  return v;
}

double mib(size_t bytes) {
  return static_cast<double>(bytes) / (1024.0 * 1024.0);
}

Tensor randn(const std::vector<int64_t>& shape, DType dt, uint64_t seed) {
  Tensor t = Tensor::empty(shape, dt);
  fill_normal(t, seed);
  return t;
}

std::vector<int> parse_int_list(const std::string& s, const char* what) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(item.c_str(), &end, 10);
    SUBQ_CHECK_ARG(!item.empty() && end && *end == '\0' && errno == 0 &&
                       v >= std::numeric_limits<int>::min() && v <= std::numeric_limits<int>::max(),
                   "subq bench", what, "a comma-separated list of integers", '"', s, '"');
    out.push_back(static_cast<int>(v));
  }
  SUBQ_CHECK_ARG(!out.empty(), "subq bench", what, "at least one value", '"', s, '"');
  return out;
}

}  // namespace subq::bench
