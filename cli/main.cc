// The `subq` command: bench, check, generate, info, train, eval, plot (and, as the project
// grows, linearize). A bad argument prints one line saying what is wrong and exits with status 2.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "bench/bench_flash.h"
#include "bench/bench_linear.h"
#include "cli/check.h"
#ifdef SUBQ_HAVE_MODEL
#include "cli/bench_gemm.h"
#include "cli/bench_model.h"
#include "cli/eval_command.h"
#include "cli/model_commands.h"
#include "cli/train_command.h"
#include "torch/ops.h"
#endif
#include "subq/backend.h"
#include "subq/error.h"
#include "subq/threads.h"

namespace {
constexpr int kExitBadArgument = 2;
}

int main(int argc, char** argv) {
  CLI::App app{
      "subq: sub-quadratic attention on the CPU.\n"
      "Operators with forward and backward passes, benchmarks against the machine's peak,\n"
      "and a self-check against float64 references."};
  app.set_version_flag("--version", "subq 0.1.0");
  app.require_subcommand(1);

  // subq bench ...
  CLI::App* bench = app.add_subcommand("bench", "Time operators; report GFLOP/s and % of peak");
  bench->require_subcommand(1);

  std::string peak_threads;
  bool peak_csv = false;
  CLI::App* peak = bench->add_subcommand(
      "peak", "Measure this machine's fp32 FMA peak (all threads unless --threads)");
  peak->add_option("--threads", peak_threads, "Thread counts, e.g. 1,2 (default: all)");
  peak->add_flag("--csv", peak_csv, "CSV output");

  std::string bandwidth_threads;
  bool bandwidth_csv = false;
  CLI::App* bandwidth = bench->add_subcommand(
      "bandwidth",
      "Measure this machine's streaming-read bandwidth (all threads unless --threads)");
  bandwidth->add_option("--threads", bandwidth_threads, "Thread counts, e.g. 1,2 (default: all)");
  bandwidth->add_flag("--csv", bandwidth_csv, "CSV output");

  subq::bench::FlashBenchConfig fc;
  CLI::App* flash = bench->add_subcommand(
      "flash", "Exact attention (FlashAttention-2 semantics): forward, backward, decode");
  flash->add_option("--B", fc.B, "Batch size")->capture_default_str();
  flash->add_option("--T", fc.T, "Sequence length (cache length with --decode)")
      ->capture_default_str();
  flash->add_option("--H", fc.H, "Query heads")->capture_default_str();
  flash->add_option("--Hkv", fc.Hkv, "Key/value heads (default: H)");
  flash->add_option("--D", fc.D, "Head dim")->capture_default_str();
  flash->add_flag("--causal", fc.causal, "Causal mask (bottom-right)");
  flash->add_option("--window", fc.window, "Window L,R (-1 unbounded)")->capture_default_str();
  flash->add_option("--dtype", fc.dtype, "f32 | bf16")->capture_default_str();
  flash->add_flag("--backward", fc.backward, "Also time the backward (pass = bwd)");
  flash->add_flag("--decode", fc.decode, "One query token against a KV cache of T tokens");
  flash->add_option("--impl", fc.impl, "fast | ref")->capture_default_str();
  flash->add_option("--threads", fc.threads,
                    "Thread counts, e.g. 1,2: one row each (default: all)");
  flash->add_flag("--csv", fc.csv, "CSV output");
  flash->add_option("--warmup", fc.warmup, "Untimed runs first")->capture_default_str();
  flash->add_option("--reps", fc.reps, "Timed runs (the median is reported)")
      ->capture_default_str();

  // subq bench linear | simple_gla | gla: the same options as flash, plus the linear ones.
  subq::bench::LinearBenchConfig lc;
  std::vector<CLI::App*> linear_cmds;
  const std::pair<const char*, const char*> linear_ops[] = {
      {"linear", "Linear attention (optionally normalized): chunk, recurrent, parallel"},
      {"simple_gla", "Gated linear attention, scalar gate per head (Mamba-2/SSD, RetNet)"},
      {"gla", "Gated linear attention, gate per key dim"},
      {"hybrid", "Linear + sliding-window hybrid (--window w-1,0; features relu(q), relu(k))"},
      {"conv", "Causal depthwise short convolution over H * D channels (--width)"}};
  for (const auto& [name, help] : linear_ops) {
    CLI::App* cmd = bench->add_subcommand(name, help);
    cmd->add_option("--B", lc.B, "Batch size")->capture_default_str();
    cmd->add_option("--T", lc.T, "Sequence length (context length with --decode)")
        ->capture_default_str();
    cmd->add_option("--H", lc.H, "Value heads")->capture_default_str();
    cmd->add_option("--Hkv", lc.Hkv, "Query/key heads (default: H)");
    cmd->add_option("--D", lc.D, "Head dim: K and V unless given")->capture_default_str();
    cmd->add_option("--K", lc.K, "Key dim (default: D)");
    cmd->add_option("--V", lc.V, "Value dim (default: D)");
    cmd->add_flag("--causal", lc.causal, "Causal (the default for these ops)");
    cmd->add_flag("--non-causal", lc.non_causal, "One global state per sequence (vision)");
    cmd->add_flag("--normalize", lc.normalize, "Normalize by q.z (linear only)");
    cmd->add_option("--window", lc.window, "Unused by these ops (CSV column)");
    cmd->add_option("--dtype", lc.dtype, "f32 | bf16")->capture_default_str();
    cmd->add_flag("--backward", lc.backward, "Also time the backward (pass = bwd)");
    cmd->add_flag("--decode", lc.decode, "One-token steps against a state that has seen T tokens");
    cmd->add_option("--impl", lc.impl, "fast | ref")->capture_default_str();
    cmd->add_option("--mode", lc.mode, "chunk | recurrent | parallel")->capture_default_str();
    cmd->add_option("--chunk", lc.chunk, "Chunk size (chunk mode)")->capture_default_str();
    cmd->add_option("--threads", lc.threads,
                    "Thread counts, e.g. 1,2: one row each (default: all)");
    cmd->add_flag("--csv", lc.csv, "CSV output");
    cmd->add_option("--warmup", lc.warmup, "Untimed runs first")->capture_default_str();
    cmd->add_option("--reps", lc.reps, "Timed runs (the median is reported)")
        ->capture_default_str();
    cmd->add_option("--width", lc.width, "Filter width (conv)")->capture_default_str();
    cmd->add_flag("--compare-flash", lc.compare_flash,
                  "Also time exact causal attention at the same shape, in the same run");
    linear_cmds.push_back(cmd);
  }

  // subq check
  subq::cli::CheckConfig cc;
  CLI::App* check = app.add_subcommand(
      "check", "Run every op at small random shapes against its float64 reference");
  check->add_option("--seed", cc.seed, "Random seed")->capture_default_str();
  check->add_option("--threads", cc.threads, "Threads (default: all)");

#ifdef SUBQ_HAVE_MODEL
  // subq bench model
  subq::cli::ModelBenchConfig mbc;
  CLI::App* bench_model = subq::cli::add_model_bench_command(*bench, mbc);
  subq::cli::GemmBenchConfig gbc;
  CLI::App* bench_gemm = subq::cli::add_gemm_bench_command(*bench, gbc);
  // subq generate, subq info
  subq::cli::GenerateConfig gc;
  CLI::App* generate = subq::cli::add_generate_command(app, gc);
  subq::cli::InfoConfig ic;
  CLI::App* info = subq::cli::add_info_command(app, ic);
  // subq train
  subq::cli::TrainCommandConfig tc;
  CLI::App* train = subq::cli::add_train_command(app, tc);
  // subq eval
  subq::cli::EvalCommandConfig ec;
  CLI::App* eval = subq::cli::add_eval_command(app, ec);
  subq::cli::PlotCommandConfig pc;
  CLI::App* plot = subq::cli::add_plot_command(app, pc);
#endif

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line, as every other bad input gets (CLI11's own exit() adds a second).
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    std::fprintf(stderr, "subq: error: %s (--help for usage)\n", msg.c_str());
    return kExitBadArgument;
  }

  try {
    // Environment settings are arguments too: a bad SUBQ_IMPL or SUBQ_NUM_THREADS is reported
    // here, once, rather than inside the first op.
    subq::resolve_impl(subq::Impl::kAuto);
    subq::num_threads();
#ifdef SUBQ_HAVE_MODEL
    subq::torch_ops::gemm_setting();  // SUBQ_GEMM
#endif
    if (*peak) {
      subq::bench::run_peak_bench(peak_threads, peak_csv);
    } else if (*bandwidth) {
      subq::bench::run_bandwidth_bench(bandwidth_threads, bandwidth_csv);
    } else if (*flash) {
      subq::bench::run_flash_bench(fc);
    } else if (auto it = std::find_if(linear_cmds.begin(), linear_cmds.end(),
                                      [](CLI::App* c) { return c->parsed(); });
               it != linear_cmds.end()) {
      lc.op = (*it)->get_name();
      subq::bench::run_linear_bench(lc);
    } else if (*check) {
      return subq::cli::run_check(cc);
    }
#ifdef SUBQ_HAVE_MODEL
    else if (*bench_model) {
      return subq::cli::run_model_bench(mbc);
    } else if (*bench_gemm) {
      return subq::cli::run_gemm_bench(gbc);
    } else if (*generate) {
      return subq::cli::run_generate(gc);
    } else if (*info) {
      return subq::cli::run_info(ic);
    } else if (*train) {
      return subq::cli::run_train(tc);
    } else if (*eval) {
      return subq::cli::run_eval(ec);
    } else if (*plot) {
      return subq::cli::run_plot(pc);
    }
#endif
  } catch (const subq::Error& e) {
    // One line, whatever the message holds (file contents can carry newlines).
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    std::fprintf(stderr, "subq: error: %s\n", msg.c_str());
    return kExitBadArgument;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "subq: error: out of memory\n");
    return kExitBadArgument;
  } catch (const std::exception& e) {
    // One line: libtorch's messages carry a backtrace after the first.
    std::string msg = e.what();
    msg = msg.substr(0, msg.find('\n'));
    std::fprintf(stderr, "subq: internal error: %s\n", msg.c_str());
    return 1;
  }
  return 0;
}
