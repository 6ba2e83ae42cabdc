// `subq eval TASK --model M [--model M2 ...]`: the evaluations (eval/, docs/eval.md), and
// `subq plot`, the training curves, from the command line (built with the torch binding).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace subq::cli {

struct EvalCommandConfig {
  std::string task;                 // passkey | niah | ppl | speed | mqar | all
  std::vector<std::string> models;  // empty: the default teacher
  std::string lengths;              // "1024,2048"; empty: the task's defaults
  int64_t trials = 10;
  std::string filler;
  int digits = 0;
  int64_t windows = 8;
  int64_t stride = 256;
  int64_t decode_tokens = 16;
  int64_t vocab = 8192;  // mqar
  int64_t pairs = 0;     // mqar: 0 = T / 16, Zoology's grid
  int64_t examples = 1000;
  uint64_t seed = 0;
  std::string out;  // resume directory (and the report of `all`)
  std::string text_dir = "data/text";
  std::string cache_dir = "data/cache";
  bool csv = false;
  std::string weights = "f32";
  int threads = 0;
};

CLI::App* add_eval_command(CLI::App& app, EvalCommandConfig& cfg);
int run_eval(const EvalCommandConfig& cfg);

// `subq plot LOG.csv [LOG2.csv ...] --out FILE`: training loss curves (eval/report.h).
struct PlotCommandConfig {
  std::vector<std::string> logs;
  std::string out = "loss";
};
CLI::App* add_plot_command(CLI::App& app, PlotCommandConfig& cfg);
int run_plot(const PlotCommandConfig& cfg);

}  // namespace subq::cli
