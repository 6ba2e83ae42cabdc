#include "bench/bench_flash.h"

#include <cstdio>

#include "bench/harness.h"
#include "subq/backend.h"
#include "subq/error.h"
#include "subq/flash.h"
#include "subq/random.h"
#include "subq/threads.h"

namespace subq::bench {

namespace {

// FLOPs of the forward: FlashAttention's formula (4 B H Tq Tk D, halved when causal); with a
// window, the visible (query, key) pairs are counted exactly instead.
double forward_flops(const FlashBenchConfig& c, int64_t Hq, int64_t Tq, int64_t Tk, int64_t L,
                     int64_t R) {
  if (L < 0 && (R < 0 || c.causal))
    return flash_forward_flops(c.B, Hq, Tq, Tk, c.D, c.D, c.causal && Tq > 1);
  const int64_t right = c.causal ? 0 : R;
  double pairs = 0;
  for (int64_t i = 0; i < Tq; ++i) {
    const int64_t pos = i + Tk - Tq;
    const int64_t lo = L >= 0 ? std::max<int64_t>(0, pos - L) : 0;
    const int64_t hi = right >= 0 ? std::min<int64_t>(Tk - 1, pos + right) : Tk - 1;
    if (hi >= lo) pairs += static_cast<double>(hi - lo + 1);
  }
  return 2.0 * c.B * Hq * pairs * (2 * c.D);
}

}  // namespace

void run_flash_bench(const FlashBenchConfig& c) {
  const char* where = "subq bench flash";
  SUBQ_CHECK_ARG(c.B >= 1, where, "--B", ">= 1", c.B);
  SUBQ_CHECK_ARG(c.T >= 1, where, "--T", ">= 1", c.T);
  SUBQ_CHECK_ARG(c.H >= 1, where, "--H", ">= 1", c.H);
  SUBQ_CHECK_ARG(c.D >= 1, where, "--D", ">= 1", c.D);
  SUBQ_CHECK_ARG(c.reps >= 1, where, "--reps", ">= 1", c.reps);
  SUBQ_CHECK_ARG(c.warmup >= 0, where, "--warmup", ">= 0", c.warmup);
  const int64_t Hkv = c.Hkv ? c.Hkv : c.H;
  const DType dt = dtype_from_name(c.dtype);
  SUBQ_CHECK_ARG(dt == DType::kF32 || dt == DType::kBF16, where, "--dtype", "f32 or bf16", c.dtype);
  const auto win = parse_int_list(c.window, "--window");
  SUBQ_CHECK_ARG(win.size() == 2, where, "--window", "two values L,R", '"', c.window, '"');
  const Impl impl = impl_from_name(c.impl);

  FlashDecodeOptions opt;
  opt.causal = c.causal;
  opt.window_left = win[0];
  opt.window_right = win[1];
  opt.impl = impl;

  Reporter rep(c.csv);
  Row row;
  row.impl = c.impl;
  row.dtype = c.dtype;
  row.B = c.B;
  row.T = c.T;
  row.H = c.H;
  row.Hkv = Hkv;
  row.D = c.D;
  row.causal = c.causal;
  row.window = c.window;

  const auto counts = thread_counts(c.threads);
  if (c.decode) {
    // One new token per sequence against a full cache of T tokens.
    Tensor q = randn({c.B, 1, c.H, c.D}, dt, 1);
    Tensor kc = randn({c.B, c.T, Hkv, c.D}, dt, 2);
    Tensor vc = randn({c.B, c.T, Hkv, c.D}, dt, 3);
    Tensor lens = Tensor::empty({c.B}, DType::kI32);
    fill(lens, static_cast<double>(c.T));
    Tensor out = Tensor::empty({c.B, 1, c.H, c.D}, dt);
    Tensor lse = Tensor::empty({c.B, c.H, 1}, DType::kF32);
    row.op = "flash_decode";
    row.io_mib = mib(q.nbytes() + kc.nbytes() + vc.nbytes() + out.nbytes() + lse.nbytes());
    const double flops = forward_flops(c, c.H, 1, c.T, win[0], win[1]);
    for (int t : counts) {
      const double peak = peak_gflops(t);
      set_num_threads(t);
      const Timing tm =
          time_runs([&] { flash_attention_decode(q, kc, vc, lens, {}, {}, out, lse, opt); },
                    c.warmup, c.reps);
      row.threads = t;
      row.ms = tm.median_ms;
      row.gflops = flops / (tm.median_ms * 1e-3) * 1e-9;
      row.peak_pct = 100.0 * row.gflops / peak;
      row.peak_rss_mib = peak_rss_mib();
      rep.add(row);
    }
    return;
  }

  Tensor q = randn({c.B, c.T, c.H, c.D}, dt, 1);
  Tensor k = randn({c.B, c.T, Hkv, c.D}, dt, 2);
  Tensor v = randn({c.B, c.T, Hkv, c.D}, dt, 3);
  Tensor out = Tensor::empty({c.B, c.T, c.H, c.D}, dt);
  Tensor lse = Tensor::empty({c.B, c.H, c.T}, DType::kF32);
  row.op = "flash";
  const size_t fwd_io = q.nbytes() + k.nbytes() + v.nbytes() + out.nbytes() + lse.nbytes();
  const double flops = forward_flops(c, c.H, c.T, c.T, win[0], win[1]);
  Tensor dout, dq, dk, dv;
  if (c.backward) {
    dout = randn({c.B, c.T, c.H, c.D}, dt, 4);
    dq = Tensor::empty(q.sizes(), dt);
    dk = Tensor::empty(k.sizes(), dt);
    dv = Tensor::empty(v.sizes(), dt);
  }
  for (int t : counts) {
    const double peak = peak_gflops(t);
    set_num_threads(t);
    const Timing tf =
        time_runs([&] { flash_attention_forward(q, k, v, out, lse, opt); }, c.warmup, c.reps);
    row.threads = t;
    row.pass = "fwd";
    row.ms = tf.median_ms;
    row.gflops = flops / (tf.median_ms * 1e-3) * 1e-9;
    row.peak_pct = 100.0 * row.gflops / peak;
    row.peak_rss_mib = peak_rss_mib();
    row.io_mib = mib(fwd_io);
    rep.add(row);
    if (c.backward) {
      const Timing tb =
          time_runs([&] { flash_attention_backward(q, k, v, out, lse, dout, dq, dk, dv, opt); },
                    c.warmup, c.reps);
      row.pass = "bwd";
      row.ms = tb.median_ms;
      row.gflops = 2.5 * flops / (tb.median_ms * 1e-3) * 1e-9;
      row.peak_pct = 100.0 * row.gflops / peak;
      row.peak_rss_mib = peak_rss_mib();
      row.io_mib = mib(fwd_io + dout.nbytes() + dq.nbytes() + dk.nbytes() + dv.nbytes());
      rep.add(row);
    }
  }
}

void run_peak_bench(const std::string& threads, bool csv) {
  const auto counts = thread_counts(threads);
  if (csv) std::printf("threads,simd_target,peak_gflops\n");
  for (int t : counts) {
    const double p = peak_gflops(t);
    if (csv) {
      std::printf("%d,%s,%.1f\n", t, simd_target().c_str(), p);
    } else {
      std::printf("threads %d  simd %s  peak_gflops %.1f\n", t, simd_target().c_str(), p);
    }
  }
}

void run_bandwidth_bench(const std::string& threads, bool csv) {
  const auto counts = thread_counts(threads);
  if (csv) std::printf("threads,bandwidth_gbs\n");
  for (int t : counts) {
    const double b = bandwidth_gbs(t);
    if (csv) {
      std::printf("%d,%.2f\n", t, b);
    } else {
      std::printf("threads %d  bandwidth_gbs %.2f  (streaming read of 1 GiB)\n", t, b);
    }
  }
}

}  // namespace subq::bench
