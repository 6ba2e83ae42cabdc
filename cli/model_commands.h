// `subq generate` and `subq info`: the decoder model from the command line (built when the
// torch binding is, see torch/CMakeLists.txt).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

namespace subq::cli {

struct GenerateConfig {
  std::string model;
  std::string prompt;
  std::string prompt_file;
  int64_t max_new_tokens = 128;
  double temperature = 0.8;
  int64_t top_k = 40;
  double top_p = 0.95;
  uint64_t seed = 0;
  int64_t prefill_chunk = 1024;
  bool stats = false;
  bool ignore_eos = false;
  int threads = 0;              // 0: all cores
  std::string weights = "f32";  // f32 | bf16
};

struct InfoConfig {
  std::string model;
  bool json = false;
};

CLI::App* add_generate_command(CLI::App& app, GenerateConfig& cfg);
CLI::App* add_info_command(CLI::App& app, InfoConfig& cfg);
int run_generate(const GenerateConfig& cfg);
int run_info(const InfoConfig& cfg);

// One team of threads for subq's kernels and libtorch's ops; 0 means every core (or
// SUBQ_NUM_THREADS). Errors on a count beyond max_threads().
void set_model_threads(int threads);

}  // namespace subq::cli
