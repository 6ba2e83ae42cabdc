#include "bench/bench_linear.h"

#include <cmath>

#include "bench/harness.h"
#include "subq/error.h"
#include "subq/flash.h"
#include "subq/linear.h"
#include "subq/random.h"
#include "subq/threads.h"

namespace subq::bench {

namespace {

// logsigmoid(N(0, 1)) log gates, as the tests use.
Tensor log_gates(const std::vector<int64_t>& shape, uint64_t seed) {
  Tensor t = Tensor::empty(shape, DType::kF32);
  Rng rng(seed);
  float* p = t.data_as<float>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double x = rng.normal();
    p[i] = static_cast<float>(x > 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x)));
  }
  return t;
}

LinearMode parse_mode(const std::string& m) {
  if (m == "chunk") return LinearMode::kChunk;
  if (m == "recurrent") return LinearMode::kRecurrent;
  if (m == "parallel") return LinearMode::kParallel;
  throw_arg_error("subq bench", "--mode", "chunk, recurrent or parallel", '"' + m + '"');
}

}  // namespace

double linear_flops(const std::string& mode, bool backward, int64_t B, int64_t T, int64_t H,
                    int64_t K, int64_t V, int64_t chunk) {
  const double b = static_cast<double>(B) * H, k = K, v = V;
  if (mode == "recurrent") return b * T * k * v * (backward ? 10.0 : 4.0);
  // Chunked (parallel = one chunk of T): per chunk of C, forward 2 C^2 (K + V) + 4 C K V;
  // backward (6K + 4V) C^2 + 10 C K V (the state sweep, P, dP, dQ, dK, dV and dS products).
  const double C = mode == "parallel" ? static_cast<double>((T + 15) / 16 * 16) : chunk;
  const double chunks = std::ceil(static_cast<double>(T) / C);
  const double per =
      backward ? (6 * k + 4 * v) * C * C + 10 * C * k * v : 2 * C * C * (k + v) + 4 * C * k * v;
  return b * chunks * per;
}

void run_linear_bench(const LinearBenchConfig& c) {
  const char* where = "subq bench";
  SUBQ_CHECK_ARG(c.op == "linear" || c.op == "simple_gla" || c.op == "gla", where, "op",
                 "linear, simple_gla or gla", c.op);
  SUBQ_CHECK_ARG(c.B >= 1 && c.T >= 1 && c.H >= 1 && c.D >= 1, where, "--B --T --H --D", "all >= 1",
                 c.B, " ", c.T, " ", c.H, " ", c.D);
  SUBQ_CHECK_ARG(c.reps >= 1, where, "--reps", ">= 1", c.reps);
  SUBQ_CHECK_ARG(c.warmup >= 0, where, "--warmup", ">= 0", c.warmup);
  const int64_t K = c.K ? c.K : c.D, V = c.V ? c.V : c.D, Hk = c.Hkv ? c.Hkv : c.H;
  const DType dt = dtype_from_name(c.dtype);
  SUBQ_CHECK_ARG(dt == DType::kF32 || dt == DType::kBF16, where, "--dtype", "f32 or bf16", c.dtype);
  LinearAttentionOptions opt;
  opt.mode = parse_mode(c.mode);
  opt.chunk_size = c.chunk;
  opt.causal = !c.non_causal;
  opt.normalize = c.normalize;
  opt.impl = impl_from_name(c.impl);
  Tensor g, gk;
  if (c.op == "simple_gla") {
    g = log_gates({c.B, c.decode ? 1 : c.T, c.H}, 7);
    opt.g = g;
  } else if (c.op == "gla") {
    gk = log_gates({c.B, c.decode ? 1 : c.T, c.H, K}, 7);
    opt.gk = gk;
  }

  Reporter rep(c.csv);
  Row row;
  row.op = c.op;
  row.impl = c.impl;
  row.dtype = c.dtype;
  row.B = c.B;
  row.T = c.T;
  row.H = c.H;
  row.Hkv = Hk;
  row.D = K;
  row.K = K;
  row.V = V;
  row.causal = opt.causal;
  row.window = c.window;
  row.mode = c.mode;

  const auto counts = thread_counts(c.threads);
  if (c.decode) {
    // A state that has seen T tokens, built by streaming the context through prefill in
    // segments (so memory stays that of a segment), then one-token steps.
    const int64_t seg = std::min<int64_t>(c.T, 1024);
    Tensor state = Tensor::zeros({c.B, c.H, K, V}, DType::kF32),
           next = Tensor::zeros({c.B, c.H, K, V}, DType::kF32);
    Tensor z, znext;
    if (c.normalize) {
      z = Tensor::zeros({c.B, c.H, K}, DType::kF32);
      znext = Tensor::zeros({c.B, c.H, K}, DType::kF32);
    }
    {
      Tensor q = randn({c.B, seg, Hk, K}, dt, 1), k = randn({c.B, seg, Hk, K}, dt, 2);
      Tensor v = randn({c.B, seg, c.H, V}, dt, 3), out = Tensor::empty({c.B, seg, c.H, V}, dt);
      Tensor sg = c.op == "simple_gla" ? log_gates({c.B, seg, c.H}, 8) : Tensor();
      Tensor sgk = c.op == "gla" ? log_gates({c.B, seg, c.H, K}, 8) : Tensor();
      LinearAttentionOptions p = opt;
      p.mode = LinearMode::kChunk;
      p.g = sg;
      p.gk = sgk;
      for (int64_t done = 0; done < c.T; done += seg) {
        const int64_t n = std::min(seg, c.T - done);
        p.initial_state = state;
        p.initial_z = z;
        linear_attention_forward(q.view().narrow(1, 0, n), k.view().narrow(1, 0, n),
                                 v.view().narrow(1, 0, n), out.view().narrow(1, 0, n), next, znext,
                                 p);
        std::swap(state, next);
        std::swap(z, znext);
      }
    }
    Tensor q = randn({c.B, 1, Hk, K}, dt, 4), k = randn({c.B, 1, Hk, K}, dt, 5);
    Tensor v = randn({c.B, 1, c.H, V}, dt, 6), out = Tensor::empty({c.B, 1, c.H, V}, dt);
    row.op = c.op + "_step";
    row.mode = "recurrent";
    row.io_mib = mib(state.nbytes() + q.nbytes() + k.nbytes() + v.nbytes() + out.nbytes());
    const double flops = linear_flops("recurrent", false, c.B, 1, c.H, K, V, c.chunk);
    for (int t : counts) {
      const double peak = peak_gflops(t);
      set_num_threads(t);
      // The step updates the state in place; the timing is of the steady state.
      const Timing tm =
          time_runs([&] { linear_attention_step(q, k, v, state, z, out, opt); }, c.warmup, c.reps);
      row.threads = t;
      row.ms = tm.median_ms;
      row.gflops = flops / (tm.median_ms * 1e-3) * 1e-9;
      row.peak_pct = 100.0 * row.gflops / peak;
      row.peak_rss_mib = peak_rss_mib();
      rep.add(row);
    }
    return;
  }

  Tensor q = randn({c.B, c.T, Hk, K}, dt, 1), k = randn({c.B, c.T, Hk, K}, dt, 2);
  Tensor v = randn({c.B, c.T, c.H, V}, dt, 3), out = Tensor::empty({c.B, c.T, c.H, V}, dt);
  row.io_mib = mib(q.nbytes() + k.nbytes() + v.nbytes() + out.nbytes() + g.nbytes() + gk.nbytes());
  Tensor dout, dq, dk, dv, dg, dgk;
  LinearAttentionGrads grads;
  if (c.backward) {
    dout = randn(v.sizes(), dt, 4);
    dq = Tensor::empty(q.sizes(), dt);
    dk = Tensor::empty(k.sizes(), dt);
    dv = Tensor::empty(v.sizes(), dt);
    grads.dq = dq;
    grads.dk = dk;
    grads.dv = dv;
    if (g.defined()) grads.dg = dg = Tensor::empty(g.sizes(), DType::kF32);
    if (gk.defined()) grads.dgk = dgk = Tensor::empty(gk.sizes(), DType::kF32);
  }
  Tensor fq, fk, fv, fo, flse, fdo, fdq, fdk, fdv;
  if (c.compare_flash) {
    SUBQ_CHECK_ARG(K == V && Hk == c.H, where, "--compare-flash", "K = V and Hkv = H", "K ", K,
                   ", V ", V, ", Hkv ", Hk);
    fq = q;
    fk = k;
    fv = v;
    fo = Tensor::empty(v.sizes(), dt);
    flse = Tensor::empty({c.B, c.H, c.T}, DType::kF32);
    if (c.backward) {
      fdo = dout;
      fdq = Tensor::empty(q.sizes(), dt);
      fdk = Tensor::empty(k.sizes(), dt);
      fdv = Tensor::empty(v.sizes(), dt);
    }
  }
  for (int t : counts) {
    const double peak = peak_gflops(t);
    set_num_threads(t);
    row.threads = t;
    for (bool bwd : {false, true}) {
      if (bwd && !c.backward) break;
      const Timing tm = time_runs(
          [&] {
            if (bwd) {
              linear_attention_backward(q, k, v, dout, {}, {}, grads, opt);
            } else {
              linear_attention_forward(q, k, v, out, {}, {}, opt);
            }
          },
          c.warmup, c.reps);
      const double flops = linear_flops(c.mode, bwd, c.B, c.T, c.H, K, V, c.chunk);
      row.pass = bwd ? "bwd" : "fwd";
      row.ms = tm.median_ms;
      row.gflops = flops / (tm.median_ms * 1e-3) * 1e-9;
      row.peak_pct = 100.0 * row.gflops / peak;
      row.peak_rss_mib = peak_rss_mib();
      rep.add(row);
    }
    if (c.compare_flash) {
      FlashOptions fo_opt;
      fo_opt.causal = true;
      Row fr = row;
      fr.op = "flash";
      fr.mode = "-";
      fr.causal = true;
      const double ff = flash_forward_flops(c.B, c.H, c.T, c.T, K, V, true);
      for (bool bwd : {false, true}) {
        if (bwd && !c.backward) break;
        const Timing tm = time_runs(
            [&] {
              if (bwd) {
                flash_attention_backward(fq, fk, fv, fo, flse, fdo, fdq, fdk, fdv, fo_opt);
              } else {
                flash_attention_forward(fq, fk, fv, fo, flse, fo_opt);
              }
            },
            c.warmup, c.reps);
        fr.pass = bwd ? "bwd" : "fwd";
        fr.ms = tm.median_ms;
        fr.gflops = (bwd ? 2.5 : 1.0) * ff / (tm.median_ms * 1e-3) * 1e-9;
        fr.peak_pct = 100.0 * fr.gflops / peak;
        fr.peak_rss_mib = peak_rss_mib();
        rep.add(fr);
      }
    }
  }
}

}  // namespace subq::bench
