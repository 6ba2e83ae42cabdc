// `subq train --config FILE --out DIR`: the training engine (train/trainer.h) from the command
// line (built with the torch binding).
#pragma once

#include <CLI/CLI.hpp>

#include <string>

namespace subq::cli {

struct TrainCommandConfig {
  std::string config;
  std::string out;
  bool resume = false;
  int threads = 0;  // 0: all cores
};

CLI::App* add_train_command(CLI::App& app, TrainCommandConfig& cfg);
int run_train(const TrainCommandConfig& cfg);

}  // namespace subq::cli
