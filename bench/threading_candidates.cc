// Measures the threading candidates for the kernels: subq's persistent pool (subq/threads.h)
// against OpenMP (libgomp), on the patterns the kernels produce. The figures behind the choice
// in docs/performance.md. Built only on request (target threading_candidates).
//
//   dispatch:   an empty parallel region, back to back (decode steps, small ops)
//   after idle: a parallel region 2 ms after the previous one (the workers have gone to sleep)
//   tiles:      512 items of ~20 us with dynamic scheduling (an attention forward)
//
// Each candidate runs in its own process (`threading_candidates pool|omp`; no argument runs
// both), since idle workers of one runtime spinning would steal cores from the other.
#include <omp.h>

#include <cstdlib>
#include <string>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <thread>
#include <vector>

#include "subq/threads.h"

namespace {

double median_us(int reps, const std::function<void()>& setup, const std::function<void()>& fn) {
  std::vector<double> us;
  for (int r = 0; r < reps; ++r) {
    setup();
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

void spin_us(double us) {
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() <
         us) {
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = static_cast<int>(std::thread::hardware_concurrency());
  const std::string which = argc > 1 ? argv[1] : "";
  if (which.empty()) {
    std::printf("%d threads; median of 200 runs (tiles: 21; ideal %.1f us)\n", threads,
                512 * 20.0 / threads);
    std::printf("%-8s %14s %14s %14s\n", "runtime", "dispatch us", "after idle us", "tiles us");
    std::fflush(stdout);
    const std::string self = argv[0];
    return std::system((self + " pool").c_str()) != 0 || std::system((self + " omp").c_str()) != 0;
  }
  const bool pool = which == "pool";
  subq::set_num_threads(threads);
  omp_set_num_threads(threads);
  std::atomic<int> sink{0};
  auto nothing = [] {};
  auto idle = [] { std::this_thread::sleep_for(std::chrono::milliseconds(2)); };
  auto empty_region = [&] {
    if (pool) {
      subq::parallel_for(threads,
                         [&](int64_t, int) { sink.fetch_add(1, std::memory_order_relaxed); });
    } else {
#pragma omp parallel
      sink.fetch_add(1, std::memory_order_relaxed);
    }
  };
  const int items = 512;
  auto tiles = [&] {
    if (pool) {
      subq::parallel_for(items, [&](int64_t, int) { spin_us(20); });
    } else {
#pragma omp parallel for schedule(dynamic, 1)
      for (int i = 0; i < items; ++i) spin_us(20);
    }
  };
  const double d = median_us(200, nothing, empty_region);
  const double i = median_us(200, idle, empty_region);
  const double t = median_us(21, nothing, tiles);
  std::printf("%-8s %14.2f %14.2f %14.1f\n", pool ? "subq" : "OpenMP", d, i, t);
  return sink.load() == -1;
}
