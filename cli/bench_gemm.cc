#include "cli/bench_gemm.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <functional>
#include <sstream>
#include <vector>

#include "bench/harness.h"
#include "subq/error.h"
#include "subq/gemm.h"
#include "subq/threads.h"
#include "torch/ops.h"
#include "torch/torch_bridge.h"

namespace subq::cli {
namespace {

struct Shape {
  int64_t in, out;
};

std::vector<Shape> parse_shapes(const std::string& s) {
  std::vector<Shape> r;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    long long in = 0, out = 0;
    char extra = 0;
    const int n = std::sscanf(item.c_str(), "%lldx%lld%c", &in, &out, &extra);
    SUBQ_CHECK(n == 2 && in >= 1 && out >= 1 && in <= (1 << 20) && out <= (1 << 20),
               "--shapes: expected IN x OUT pairs such as 576x1536 (each 1 to 2^20), got \"", item,
               "\"");
    r.push_back({in, out});
  }
  SUBQ_CHECK(!r.empty(), "--shapes: expected at least one IN x OUT pair");
  return r;
}

// One candidate: how it runs each pass of a linear layer y [M, out] = x [M, in] · Wᵀ.
struct Candidate {
  const char* name;
  std::function<void()> fwd, bwd_input, bwd_weight;
};

}  // namespace

CLI::App* add_gemm_bench_command(CLI::App& bench, GemmBenchConfig& c) {
  CLI::App* g = bench.add_subcommand(
      "gemm",
      "A linear layer's three GEMMs (forward, input and weight gradient) on libtorch's GEMM "
      "(MKL), oneDNN and subq's, against peak");
  g->add_option("--rows", c.rows, "Rows of x (tokens)")->capture_default_str();
  g->add_option("--shapes", c.shapes, "Layers as IN x OUT, e.g. 576x1536,1536x576")
      ->capture_default_str();
  g->add_option("--threads", c.threads, "Thread counts, e.g. 1,2 (default: all cores)");
  g->add_option("--reps", c.reps, "Runs per figure (median)")->capture_default_str();
  g->add_flag("--csv", c.csv, "CSV output");
  return g;
}

int run_gemm_bench(const GemmBenchConfig& c) {
  SUBQ_CHECK(c.rows >= 1 && c.rows <= (1 << 20), "--rows: expected 1 to 2^20, got ", c.rows);
  SUBQ_CHECK(c.reps >= 1 && c.reps <= 1000, "--reps: expected 1 to 1000, got ", c.reps);
  const std::vector<Shape> shapes = parse_shapes(c.shapes);
  for (const Shape& s : shapes)
    SUBQ_CHECK(static_cast<double>(c.rows) * static_cast<double>(s.in + s.out) +
                       static_cast<double>(s.in) * static_cast<double>(s.out) <=
                   double(1 << 28),
               "--rows and --shapes: the tensors of ", s.in, "x", s.out, " with ", c.rows,
               " rows exceed 2^28 floats");
  bool header = false;
  for (int threads : bench::thread_counts(c.threads)) {
    set_num_threads(threads);
    const double peak = bench::peak_gflops(threads);
    for (const Shape& s : shapes) {
      const int64_t M = c.rows;
      const at::Tensor x = at::randn({M, s.in}), w = at::randn({s.out, s.in});
      const at::Tensor dy = at::randn({M, s.out});
      at::Tensor y = at::empty({M, s.out}), dx = at::empty({M, s.in}),
                 dw = at::empty({s.out, s.in});
      const auto view = [](const at::Tensor& t) { return torch_ops::to_view(t, "bench", "t"); };
      // oneDNN on its own (blocked) tensors, converted outside the timing.
      const at::Tensor xm = x.to_mkldnn(), wm = w.to_mkldnn(), dym = dy.to_mkldnn();
      std::vector<Candidate> cands = {
          {"torch", [&] { at::linear_out(y, x, w); }, [&] { at::mm_out(dx, dy, w); },
           [&] { at::mm_out(dw, dy.t(), x); }},
          {"onednn", [&] { (void)at::mkldnn_linear(xm, wm); },
           [&] {
             (void)at::mkldnn_linear_backward_input({M, s.in}, dym, w);
           },
           [&] { (void)at::mkldnn_linear_backward_weights(dym, xm, wm, false); }},
          {"subq", [&] { gemm(view(x), view(w).transposed(), view(y)); },
           [&] { gemm(view(dy), view(w), view(dx)); },
           [&] { gemm(view(dy).transposed(), view(x), view(dw)); }},
      };
      const double flops =
          2.0 * static_cast<double>(M) * static_cast<double>(s.in) * static_cast<double>(s.out);
      for (const char* pass : {"fwd", "bwd_input", "bwd_weight"}) {
        for (const Candidate& cand : cands) {
          const std::function<void()>& fn = std::string(pass) == "fwd"         ? cand.fwd
                                            : std::string(pass) == "bwd_input" ? cand.bwd_input
                                                                               : cand.bwd_weight;
          double ms = -1;
          try {
            ms = bench::time_runs(fn, 1, c.reps).median_ms;
          } catch (const std::exception& e) {
            std::fprintf(stderr, "subq bench gemm: %s %s %lldx%lld: %s\n", cand.name, pass,
                         static_cast<long long>(s.in), static_cast<long long>(s.out), e.what());
          }
          const double gf = ms > 0 ? flops / (ms * 1e6) : 0;
          if (c.csv) {
            if (!header) std::printf("rows,in,out,pass,impl,threads,ms,gflops,peak_pct\n");
            std::printf("%lld,%lld,%lld,%s,%s,%d,%.3f,%.1f,%.1f\n", static_cast<long long>(M),
                        static_cast<long long>(s.in), static_cast<long long>(s.out), pass,
                        cand.name, threads, ms, gf, 100.0 * gf / peak);
          } else {
            std::printf(
                "rows %5lld  %5lld -> %-6lld %-10s %-7s threads %d  %8.3f ms  %7.1f GFLOP/s  "
                "peak %5.1f%%\n",
                static_cast<long long>(M), static_cast<long long>(s.in),
                static_cast<long long>(s.out), pass, cand.name, threads, ms, gf, 100.0 * gf / peak);
          }
          header = true;
          std::fflush(stdout);
        }
      }
    }
  }
  return 0;
}

}  // namespace subq::cli
