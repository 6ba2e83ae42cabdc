#include "bench/bench_linear.h"

#include <cmath>
#include <cstdio>
#include <functional>

#include "bench/harness.h"
#include "subq/conv.h"
#include "subq/error.h"
#include "subq/flash.h"
#include "subq/hybrid.h"
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

namespace {

Row base_row(const LinearBenchConfig& c, int64_t K, int64_t V, int64_t Hk) {
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
  row.causal = true;
  row.window = c.window;
  row.mode = c.mode;
  return row;
}

// Times fn for each thread count and prints a row per pass.
void time_rows(const LinearBenchConfig& c, Reporter& rep, Row row, const char* pass, double flops,
               const std::function<void()>& fn) {
  for (int t : thread_counts(c.threads)) {
    const double peak = peak_gflops(t);
    set_num_threads(t);
    const Timing tm = time_runs(fn, c.warmup, c.reps);
    row.threads = t;
    row.pass = pass;
    row.ms = tm.median_ms;
    row.gflops = flops / (tm.median_ms * 1e-3) * 1e-9;
    row.peak_pct = 100.0 * row.gflops / peak;
    row.peak_rss_mib = peak_rss_mib();
    rep.add(row);
  }
}

// conv: x [B, T, H * D] (the channels of a model's hidden state), filter width --width.
void run_conv_bench(const LinearBenchConfig& c) {
  const DType dt = dtype_from_name(c.dtype);
  const int64_t C = c.H * c.D, W = c.width;
  Tensor x = randn({c.B, c.T, C}, dt, 1), w = randn({C, W}, DType::kF32, 2);
  Tensor bias = randn({C}, DType::kF32, 3);
  ShortConvOptions opt;
  opt.silu = true;
  opt.bias = bias;
  opt.impl = impl_from_name(c.impl);
  Reporter rep(c.csv);
  Row row = base_row(c, W, W, c.H);
  row.D = c.D;
  row.mode.assign(1, '-');  // (assign: a string literal here trips a GCC 12 -Wrestrict bug)
  if (c.decode) {
    Tensor state = Tensor::zeros({c.B, W - 1, C}, DType::kF32);
    Tensor x1 = randn({c.B, C}, dt, 4), y1 = Tensor::empty({c.B, C}, dt);
    row.op = "conv_update";
    row.io_mib = mib(state.nbytes() + x1.nbytes() + y1.nbytes());
    time_rows(c, rep, row, "fwd", 2.0 * c.B * C * W,
              [&] { short_conv_update(x1, w, state, y1, opt); });
    return;
  }
  Tensor y = Tensor::empty(x.sizes(), dt);
  row.io_mib = mib(2 * x.nbytes());
  const double flops = 2.0 * c.B * c.T * C * W;
  time_rows(c, rep, row, "fwd", flops, [&] { short_conv_forward(x, w, y, {}, opt); });
  if (c.backward) {
    Tensor dy = randn(x.sizes(), dt, 5), dx = Tensor::empty(x.sizes(), dt);
    Tensor dw = Tensor::empty(w.sizes(), DType::kF32),
           db = Tensor::empty(bias.sizes(), DType::kF32);
    ShortConvGrads g;
    g.dx = dx;
    g.dweight = dw;
    g.dbias = db;
    time_rows(c, rep, row, "bwd", 2 * flops, [&] { short_conv_backward(x, w, dy, {}, g, opt); });
  }
}

// hybrid: q, k [B, T, H, K], features fq = relu(q) and fk = relu(k) (f = K), v [B, T, H, V];
// window w from --window "w-1,0" (default 64).
void run_hybrid_bench(const LinearBenchConfig& c, int64_t K, int64_t V) {
  const DType dt = dtype_from_name(c.dtype);
  const auto win = parse_int_list(c.window, "--window");
  SUBQ_CHECK_ARG(win.size() == 2, "subq bench hybrid", "--window", "two values L,R", c.window);
  const int64_t w = win[0] >= 0 ? win[0] + 1 : 64;
  Tensor wf = Tensor::empty({c.H}, DType::kF32);
  fill(wf, kHybridWindowFactorInit);
  HybridOptions opt;
  opt.window = w;
  opt.window_factor = wf;
  opt.chunk_size = c.chunk;
  opt.impl = impl_from_name(c.impl);
  Reporter rep(c.csv);
  Row row = base_row(c, K, V, c.H);
  char wins[32];
  std::snprintf(wins, sizeof wins, "%lld,0", static_cast<long long>(w - 1));
  row.window = wins;
  row.mode = "chunk";
  auto positive = [&](const std::vector<int64_t>& shape, uint64_t seed) {
    Tensor t = Tensor::empty(shape, dt);
    fill_uniform(t, seed, 0.0, 1.0);
    return t;
  };
  if (c.decode) {
    HybridCache cache = HybridCache::create(c.B, c.H, K, K, V, w);
    const int64_t seg = std::min<int64_t>(c.T, 1024);  // stream the context in segments
    {
      Tensor k = randn({c.B, seg, c.H, K}, dt, 2), fk = positive({c.B, seg, c.H, K}, 3);
      Tensor v = randn({c.B, seg, c.H, V}, dt, 4);
      for (int64_t done = 0; done < c.T; done += seg) {
        const int64_t n = std::min(seg, c.T - done);
        if (done == 0) {
          hybrid_cache_prefill(k.view().narrow(1, 0, n), fk.view().narrow(1, 0, n),
                               v.view().narrow(1, 0, n), {}, cache, opt);
        } else {
          for (int64_t t = 0; t < n; ++t) {
            Tensor out1 = Tensor::empty({c.B, 1, c.H, V}, dt);
            hybrid_attention_step(k.view().narrow(1, t, 1), k.view().narrow(1, t, 1),
                                  fk.view().narrow(1, t, 1), fk.view().narrow(1, t, 1),
                                  v.view().narrow(1, t, 1), {}, cache, out1, opt);
          }
        }
      }
    }
    Tensor q = randn({c.B, 1, c.H, K}, dt, 5), fq = positive({c.B, 1, c.H, K}, 6);
    Tensor v1 = randn({c.B, 1, c.H, V}, dt, 7), out = Tensor::empty({c.B, 1, c.H, V}, dt);
    row.op = "hybrid_step";
    row.mode = "recurrent";
    row.io_mib = mib(cache.nbytes());
    const double flops = 2.0 * c.B * c.H * (w * (K + V) + K * (V + 1) * 2);
    time_rows(c, rep, row, "fwd", flops,
              [&] { hybrid_attention_step(q, q, fq, fq, v1, {}, cache, out, opt); });
    return;
  }
  Tensor q = randn({c.B, c.T, c.H, K}, dt, 1), k = randn({c.B, c.T, c.H, K}, dt, 2);
  Tensor fq = positive({c.B, c.T, c.H, K}, 3), fk = positive({c.B, c.T, c.H, K}, 4);
  Tensor v = randn({c.B, c.T, c.H, V}, dt, 5), out = Tensor::empty(v.sizes(), dt);
  row.io_mib = mib(q.nbytes() * 4 + v.nbytes() * 2);
  // Window part: 2 w (K + V) per query; linear part: the chunked linear attention with V + 1.
  const double flops = 2.0 * c.B * c.H * c.T * w * (K + V) +
                       linear_flops("chunk", false, c.B, c.T, c.H, K, V + 1, c.chunk);
  time_rows(c, rep, row, "fwd", flops,
            [&] { hybrid_attention_forward(q, k, fq, fk, v, out, opt); });
  if (c.backward) {
    Tensor dout = randn(v.sizes(), dt, 6);
    Tensor dq = Tensor::empty(q.sizes(), dt), dk = Tensor::empty(q.sizes(), dt);
    Tensor dfq = Tensor::empty(q.sizes(), dt), dfk = Tensor::empty(q.sizes(), dt);
    Tensor dv = Tensor::empty(v.sizes(), dt);
    HybridGrads g;
    g.dq = dq;
    g.dk = dk;
    g.dfq = dfq;
    g.dfk = dfk;
    g.dv = dv;
    const double bflops = 2 * 2.0 * c.B * c.H * c.T * w * (K + V) +
                          linear_flops("chunk", true, c.B, c.T, c.H, K, V + 1, c.chunk);
    time_rows(c, rep, row, "bwd", bflops,
              [&] { hybrid_attention_backward(q, k, fq, fk, v, dout, g, opt); });
  }
}

}  // namespace

void run_linear_bench(const LinearBenchConfig& c) {
  const char* where = "subq bench";
  SUBQ_CHECK_ARG(c.op == "linear" || c.op == "simple_gla" || c.op == "gla" || c.op == "hybrid" ||
                     c.op == "conv",
                 where, "op", "linear, simple_gla, gla, hybrid or conv", c.op);
  SUBQ_CHECK_ARG(c.B >= 1 && c.T >= 1 && c.H >= 1 && c.D >= 1, where, "--B --T --H --D", "all >= 1",
                 c.B, " ", c.T, " ", c.H, " ", c.D);
  SUBQ_CHECK_ARG(c.reps >= 1, where, "--reps", ">= 1", c.reps);
  SUBQ_CHECK_ARG(c.warmup >= 0, where, "--warmup", ">= 0", c.warmup);
  const int64_t K = c.K ? c.K : c.D, V = c.V ? c.V : c.D, Hk = c.Hkv ? c.Hkv : c.H;
  const DType dt = dtype_from_name(c.dtype);
  SUBQ_CHECK_ARG(dt == DType::kF32 || dt == DType::kBF16, where, "--dtype", "f32 or bf16", c.dtype);
  if (c.op == "conv") {
    SUBQ_CHECK_ARG(c.width >= 1 && c.width <= kMaxConvWidth, where, "--width", "1 to 8", c.width);
    return run_conv_bench(c);
  }
  if (c.op == "hybrid") return run_hybrid_bench(c, K, V);
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
        if (sg.defined()) p.g = sg.view().narrow(1, 0, n);
        if (sgk.defined()) p.gk = sgk.view().narrow(1, 0, n);
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
