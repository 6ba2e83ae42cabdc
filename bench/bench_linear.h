// `subq bench linear | simple_gla | gla | hybrid | conv`: (gated) linear attention in any form,
// the linear + sliding-window hybrid, and the short convolution; forward, backward and decode,
// optionally next to exact causal attention at the same shape.
#pragma once

#include <cstdint>
#include <string>

namespace subq::bench {

struct LinearBenchConfig {
  std::string op;  // linear | simple_gla | gla | hybrid | conv
  int64_t B = 1, T = 4096, H = 8, Hkv = 0 /* key heads; 0: H */, D = 128;
  int64_t K = 0, V = 0;  // 0: D
  bool causal = true;    // --causal is the default for these ops; --non-causal turns it off
  bool non_causal = false;
  bool normalize = false;
  std::string window = "-1,-1";  // not used by these ops; kept for the shared CSV column
  std::string dtype = "f32";
  bool backward = false;
  bool decode = false;  // one step against a state that has seen T tokens
  std::string impl = "fast";
  std::string mode = "chunk";
  int64_t chunk = 64;
  std::string threads;
  bool csv = false;
  int warmup = 1, reps = 5;
  bool compare_flash = false;  // also time exact causal attention at the same shape
  int64_t width = 4;           // conv: filter width
};

void run_linear_bench(const LinearBenchConfig& cfg);

// FLOPs the forms actually do (docs/linear_attention.md), per pass.
double linear_flops(const std::string& mode, bool backward, int64_t B, int64_t T, int64_t H,
                    int64_t K, int64_t V, int64_t chunk);

}  // namespace subq::bench
