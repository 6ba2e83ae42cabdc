// The `subq` command: bench, check (and, as the project grows, train, linearize, eval,
// generate). A bad argument prints one line saying what is wrong and exits with status 2.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "bench/bench_flash.h"
#include "cli/check.h"
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

  // subq check
  subq::cli::CheckConfig cc;
  CLI::App* check = app.add_subcommand(
      "check", "Run every op at small random shapes against its float64 reference");
  check->add_option("--seed", cc.seed, "Random seed")->capture_default_str();
  check->add_option("--threads", cc.threads, "Threads (default: all)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);  // prints the message and the usage hint
    return kExitBadArgument;
  }

  try {
    // Environment settings are arguments too: a bad SUBQ_IMPL or SUBQ_NUM_THREADS is reported
    // here, once, rather than inside the first op.
    subq::resolve_impl(subq::Impl::kAuto);
    subq::num_threads();
    if (*peak) {
      subq::bench::run_peak_bench(peak_threads, peak_csv);
    } else if (*flash) {
      subq::bench::run_flash_bench(fc);
    } else if (*check) {
      return subq::cli::run_check(cc);
    }
  } catch (const subq::Error& e) {
    std::fprintf(stderr, "subq: error: %s\n", e.what());
    return kExitBadArgument;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "subq: internal error: %s\n", e.what());
    return 1;
  }
  return 0;
}
