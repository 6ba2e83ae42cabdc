// `subq bench model`: the whole decoder model, phase by phase (prefill, decode, train step), as
// ratios to this machine's measured peak and bandwidth (docs/performance.md).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace subq::cli {

struct ModelBenchConfig {
  std::string model;             // checkpoint directory or .gguf; default: the default teacher
  std::string lengths = "1024";  // context lengths
  std::string phases = "prefill,decode,train";
  std::string weights = "f32";  // f32 | bf16 (prefill and decode)
  std::string threads;          // thread counts; default: all cores
  int reps = 3;                 // median of reps (prefill, train)
  int decode_tokens = 32;       // decode steps timed per length
  bool csv = false;
};

CLI::App* add_model_bench_command(CLI::App& bench, ModelBenchConfig& cfg);
int run_model_bench(const ModelBenchConfig& cfg);

}  // namespace subq::cli
