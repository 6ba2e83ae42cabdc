// `subq bench gemm`: the three GEMMs of a linear layer (forward y = x Wᵀ, input gradient
// dx = dy W, weight gradient dW = dyᵀ x) on libtorch's GEMM (MKL in the PyPI wheel), oneDNN
// and subq's own (subq/gemm.h), as ratios to this machine's peak: the measurements behind the
// run-time choice of torch_ops::linear_gemm_backend (docs/performance.md, "GEMM").
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace subq::cli {

struct GemmBenchConfig {
  int64_t rows = 1024;  // tokens
  // The default teacher's layers (SmolLM2-135M): q/o, k/v, gate/up, down, lm_head.
  std::string shapes = "576x576,576x192,576x1536,1536x576,576x49152";
  std::string threads;  // thread counts; default: all cores
  int reps = 5;
  bool csv = false;
};

CLI::App* add_gemm_bench_command(CLI::App& bench, GemmBenchConfig& cfg);
int run_gemm_bench(const GemmBenchConfig& cfg);

}  // namespace subq::cli
