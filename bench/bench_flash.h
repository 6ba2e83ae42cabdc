// `subq bench flash`: exact attention forward, backward and decode.
#pragma once

#include <cstdint>
#include <string>

namespace subq::bench {

struct FlashBenchConfig {
  int64_t B = 1, T = 4096, H = 8, Hkv = 0 /* 0: same as H */, D = 128;
  bool causal = false;
  std::string window = "-1,-1";  // "L,R"
  std::string dtype = "f32";
  bool backward = false;  // also time the backward (pass = bwd)
  bool decode = false;    // one query token against a KV cache of T tokens
  std::string impl = "fast";
  std::string threads;  // "1,2": one row per thread count; empty: all threads
  bool csv = false;
  int warmup = 1, reps = 5;
};

// Prints one row per (thread count, pass). Throws subq::Error on a bad option.
void run_flash_bench(const FlashBenchConfig& cfg);

// `subq bench peak`: prints peak_gflops for each thread count.
// subq bench bandwidth: the streaming-read bandwidth, one row per thread count.
void run_bandwidth_bench(const std::string& threads, bool csv);
void run_peak_bench(const std::string& threads, bool csv);

}  // namespace subq::bench
