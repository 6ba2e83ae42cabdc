// The benchmark harness behind `subq bench`: timing (warm-up, then the median of several runs),
// the machine's peak measured in the same process, peak RSS, and one output line format for
// every op, as a table or CSV.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "subq/tensor.h"

namespace subq::bench {

struct Timing {
  double median_ms = 0, min_ms = 0;
  int runs = 0;
};

// Runs fn `warmup` times untimed, then `reps` timed runs; returns their median and minimum.
Timing time_runs(const std::function<void()>& fn, int warmup, int reps);

// Peak resident set size of this process so far, in MiB.
double peak_rss_mib();

// fp32 FMA peak with `threads` threads, measured once per thread count and cached.
double peak_gflops(int threads);

// Streaming-read bandwidth (GB/s) with `threads` threads, measured once per thread count and
// cached: the bound of bandwidth-bound work such as decode.
double bandwidth_gbs(int threads);

// One result line. Every op's bench fills the same columns.
struct Row {
  std::string op, impl, dtype;
  int64_t B = 0, T = 0, H = 0, Hkv = 0, D = 0;
  bool causal = false;
  std::string window = "-1,-1";
  std::string pass = "fwd";
  int threads = 1;
  double ms = 0, gflops = 0, peak_pct = 0;
  double peak_rss_mib = 0, io_mib = 0;
  // Linear ops: key and value dims and the form (flash rows: K = V = D, mode "-").
  int64_t K = 0, V = 0;
  std::string mode = "-";
};

class Reporter {
 public:
  explicit Reporter(bool csv) : csv_(csv) {}
  void add(const Row& r);

 private:
  bool csv_;
  bool header_done_ = false;
};

// Parses "1,2,4" into {1, 2, 4}; throws subq::Error on anything else.
std::vector<int> parse_int_list(const std::string& s, const char* what);

// The thread counts of --threads ("1,2"); empty means all threads.
std::vector<int> thread_counts(const std::string& s);

double mib(size_t bytes);

// A seeded standard-normal tensor.
Tensor randn(const std::vector<int64_t>& shape, DType dt, uint64_t seed);

}  // namespace subq::bench
