// Causal depthwise short convolution: the float64 reference against finite differences, the fast
// kernel against the reference over the shape grid, prefill then continue, decode updates,
// varlen, threads and bad input.
#include <gtest/gtest.h>

#include <tuple>

#include "subq/conv.h"
#include "subq/error.h"
#include "subq/threads.h"
#include "tests/test_util.h"

namespace subq {
namespace {

using test::randn;
using test::rel_rms;

struct ConvCase {
  int64_t B = 2, T = 50, D = 24, W = 4;
  bool silu = true, bias = true, h0 = true;
  DType dt = DType::kF32;
  uint64_t seed = 1;
  int64_t N = -1;  // sequences (varlen); -1: B
};

struct ConvProblem {
  ConvCase c;
  Tensor x, w, bias, h0, dout, dht;
  ShortConvOptions opt;
  explicit ConvProblem(const ConvCase& cs) : c(cs) {
    const int64_t N = c.N > 0 ? c.N : c.B;
    const DType pdt = c.dt == DType::kF64 ? DType::kF64 : DType::kF32;
    x = randn({c.B, c.T, c.D}, c.dt, c.seed);
    w = randn({c.D, c.W}, pdt, c.seed + 1, 0.5);
    dout = randn({c.B, c.T, c.D}, c.dt, c.seed + 2);
    dht = randn({N, c.W - 1, c.D}, pdt, c.seed + 3);
    opt.silu = c.silu;
    if (c.bias) {
      bias = randn({c.D}, pdt, c.seed + 4, 0.5);
      opt.bias = bias;
    }
    if (c.h0) {
      h0 = randn({N, c.W - 1, c.D}, pdt, c.seed + 5);
      opt.initial_state = h0;
    }
  }
};

struct ConvOut {
  Tensor y, ht;
};
ConvOut forward(const ConvProblem& p, ShortConvOptions opt) {
  ConvOut r;
  r.y = Tensor::zeros(p.x.sizes(), p.x.dtype());
  r.ht = Tensor::empty(p.dht.sizes(), p.dht.dtype());
  short_conv_forward(p.x, p.w, r.y, r.ht, opt);
  return r;
}

struct ConvGradT {
  Tensor dx, dw, db, dh0;
};
ConvGradT backward(const ConvProblem& p, ShortConvOptions opt) {
  ConvGradT t;
  t.dx = Tensor::empty(p.x.sizes(), p.x.dtype());
  t.dw = Tensor::empty(p.w.sizes(), p.w.dtype());
  ShortConvGrads g;
  g.dx = t.dx;
  g.dweight = t.dw;
  if (p.bias.defined()) g.dbias = t.db = Tensor::empty(p.bias.sizes(), p.bias.dtype());
  if (p.c.W > 1) g.dh0 = t.dh0 = Tensor::empty(p.dht.sizes(), p.dht.dtype());
  short_conv_backward(p.x, p.w, p.dout, p.c.W > 1 ? TensorView(p.dht) : TensorView(), g, opt);
  return t;
}

TEST(ShortConvReference, FiniteDifferences) {
  for (int64_t W : {1, 2, 4, 8}) {
    for (bool silu : {false, true}) {
      for (int64_t T : {2, 9}) {  // T = 2 < W - 1 for W = 4, 8: the initial state reaches the end
        ConvCase c;
        c.B = 2;
        c.T = T;
        c.D = 3;
        c.W = W;
        c.silu = silu;
        c.h0 = W > 1;
        c.dt = DType::kF64;
        ConvProblem p(c);
        ShortConvOptions opt = p.opt;
        opt.impl = Impl::kRef;
        auto loss = [&] {
          ConvOut r = forward(p, opt);
          double s = 0;
          const auto y = test::values(r.y), d = test::values(p.dout);
          for (size_t i = 0; i < y.size(); ++i) s += y[i] * d[i];
          if (W > 1) {
            const auto h = test::values(r.ht), dh = test::values(p.dht);
            for (size_t i = 0; i < h.size(); ++i) s += h[i] * dh[i];
          }
          return s;
        };
        ConvGradT g = backward(p, opt);
        std::vector<std::pair<Tensor*, Tensor*>> params = {
            {&p.x, &g.dx}, {&p.w, &g.dw}, {&p.bias, &g.db}};
        if (W > 1) params.push_back({&p.h0, &g.dh0});
        for (auto [x, gx] : params) {
          const double eps = 1e-6;
          const auto analytic = test::values(*gx);
          std::vector<double> numeric(analytic.size());
          for (int64_t i = 0; i < x->numel(); ++i) {
            // Flat access over the contiguous tensor.
            const double v0 = load_at(*x, i);
            store_at(*x, i, v0 + eps);
            const double up = loss();
            store_at(*x, i, v0 - eps);
            const double down = loss();
            store_at(*x, i, v0);
            numeric[i] = (up - down) / (2 * eps);
          }
          EXPECT_LE(rel_rms(analytic, numeric), 1e-6)
              << "W " << W << " silu " << silu << " T " << T;
        }
      }
    }
  }
}

class ConvGrid : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, bool>> {};

TEST_P(ConvGrid, MatchesReference) {
  const auto [T, D, silu] = GetParam();
  if (test::quick() && T > 100) GTEST_SKIP() << "quick mode (sanitizer run)";
  ConvCase c;
  c.T = T;
  c.D = D;
  c.silu = silu;
  c.seed = static_cast<uint64_t>(T * 1000 + D);
  ConvProblem p(c);
  ShortConvOptions ref = p.opt;
  ref.impl = Impl::kRef;
  ConvOut f = forward(p, p.opt), r = forward(p, ref);
  EXPECT_LE(rel_rms(f.y, r.y), 1e-5);
  EXPECT_LE(rel_rms(f.ht, r.ht), 1e-6);
  ConvGradT gf = backward(p, p.opt), gr = backward(p, ref);
  EXPECT_LE(rel_rms(gf.dx, gr.dx), 1e-5);
  EXPECT_LE(rel_rms(gf.dw, gr.dw), 1e-5);
  EXPECT_LE(rel_rms(gf.db, gr.db), 1e-5);
  EXPECT_LE(rel_rms(gf.dh0, gr.dh0), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, ConvGrid,
                         ::testing::Combine(::testing::Values(1, 7, 63, 64, 65, 100, 257, 1000),
                                            ::testing::Values(16, 60, 64, 100, 128),
                                            ::testing::Bool()));

TEST(ShortConv, WidthsAndNoOptions) {
  for (int64_t W : {1, 2, 3, 4, 8}) {
    for (bool bias : {false, true}) {
      ConvCase c;
      c.W = W;
      c.bias = bias;
      c.h0 = false;
      c.T = 300;  // more than one block of rows
      ConvProblem p(c);
      ShortConvOptions ref = p.opt;
      ref.impl = Impl::kRef;
      EXPECT_LE(rel_rms(forward(p, p.opt).y, forward(p, ref).y), 1e-5) << W;
      ConvGradT gf = backward(p, p.opt), gr = backward(p, ref);
      EXPECT_LE(rel_rms(gf.dx, gr.dx), 1e-5) << W;
      EXPECT_LE(rel_rms(gf.dw, gr.dw), 1e-5) << W;
    }
  }
}

TEST(ShortConv, PrefillThenContinueAndUpdates) {
  ConvCase c;
  c.T = 90;
  c.h0 = false;
  ConvProblem p(c);
  ConvOut whole = forward(p, p.opt);
  // Prefill 60, continue 20 from the state, then 10 single-token updates.
  Tensor s1 = Tensor::empty({c.B, c.W - 1, c.D}, DType::kF32),
         s2 = Tensor::empty({c.B, c.W - 1, c.D}, DType::kF32);
  Tensor y = Tensor::empty(p.x.sizes(), DType::kF32);
  short_conv_forward(p.x.view().narrow(1, 0, 60), p.w, y.view().narrow(1, 0, 60), s1, p.opt);
  ShortConvOptions o = p.opt;
  o.initial_state = s1;
  short_conv_forward(p.x.view().narrow(1, 60, 20), p.w, y.view().narrow(1, 60, 20), s2, o);
  for (int64_t t = 80; t < 90; ++t) {
    Tensor xt = Tensor::copy_of(p.x.view().narrow(1, t, 1));
    TensorView x2d(xt.data(), DType::kF32, {c.B, c.D});
    Tensor yt = Tensor::empty({c.B, c.D}, DType::kF32);
    short_conv_update(x2d, p.w, s2, yt, p.opt);
    EXPECT_LE(
        rel_rms(TensorView(yt.data(), DType::kF32, {c.B, 1, c.D}), whole.y.view().narrow(1, t, 1)),
        1e-6)
        << t;
  }
  EXPECT_LE(rel_rms(y.view().narrow(1, 0, 80), whole.y.view().narrow(1, 0, 80)), 1e-6);
  EXPECT_LE(rel_rms(s2, whole.ht), 1e-7);
}

TEST(ShortConv, VarlenMatchesLoop) {
  const std::vector<int64_t> lens = {300, 2, 0, 57};
  int64_t total = 0;
  for (int64_t n : lens) total += n;
  ConvCase c;
  c.B = 1;
  c.T = total + 2;
  c.N = static_cast<int64_t>(lens.size());
  ConvProblem p(c);
  Tensor cu = Tensor::empty({c.N + 1}, DType::kI32);
  int64_t off = 0;
  for (int64_t n = 0; n <= c.N; ++n) {
    set_element(cu, {n}, static_cast<double>(off));
    if (n < c.N) off += lens[n];
  }
  ShortConvOptions opt = p.opt;
  opt.cu_seqlens = cu;
  ConvOut packed = forward(p, opt);
  ConvGradT gp = backward(p, opt);
  off = 0;
  for (int64_t n = 0; n < c.N; ++n) {
    const int64_t T = lens[n];
    ShortConvOptions o = p.opt;
    Tensor h0 = Tensor::copy_of(p.h0.view().narrow(0, n, 1));
    o.initial_state = h0;
    if (T > 0) {
      Tensor x = Tensor::copy_of(p.x.view().narrow(1, off, T));
      Tensor y = Tensor::empty(x.sizes(), DType::kF32),
             ht = Tensor::empty({1, c.W - 1, c.D}, DType::kF32);
      short_conv_forward(x, p.w, y, ht, o);
      EXPECT_LE(rel_rms(packed.y.view().narrow(1, off, T), y), 1e-6) << n;
      EXPECT_LE(rel_rms(packed.ht.view().narrow(0, n, 1), ht), 1e-7) << n;
    } else {  // an empty sequence passes its state through
      EXPECT_LE(rel_rms(packed.ht.view().narrow(0, n, 1), h0), 1e-7) << n;
    }
    off += T;
  }
  for (double x : test::values(gp.dx.view().narrow(1, total, 2))) EXPECT_EQ(x, 0.0);
  ShortConvOptions ref = opt;
  ref.impl = Impl::kRef;
  ConvGradT gr = backward(p, ref);
  EXPECT_LE(rel_rms(gp.dx, gr.dx), 1e-5);
  EXPECT_LE(rel_rms(gp.dh0, gr.dh0), 1e-5);
  EXPECT_LE(rel_rms(gp.dw, gr.dw), 1e-5);
}

TEST(ShortConv, Bf16AndThreads) {
  ConvCase c;
  c.T = 700;
  c.dt = DType::kBF16;
  ConvProblem p(c);
  ShortConvOptions ref = p.opt;
  ref.impl = Impl::kRef;
  Tensor yr = Tensor::empty(p.x.sizes(), DType::kF32);
  short_conv_forward(p.x, p.w, yr, {}, ref);
  EXPECT_LE(rel_rms(forward(p, p.opt).y, yr), 5e-3);
  c.dt = DType::kF32;
  ConvProblem q(c);
  const int saved = num_threads();
  set_num_threads(1);
  ConvGradT g1 = backward(q, q.opt);
  set_num_threads(2);
  ConvGradT g2 = backward(q, q.opt);
  set_num_threads(saved);
  EXPECT_EQ(test::max_abs_diff(test::values(g1.dw), test::values(g2.dw)), 0.0);
  EXPECT_EQ(test::max_abs_diff(test::values(g1.dx), test::values(g2.dx)), 0.0);
}

TEST(ShortConv, BadInput) {
  ConvCase c;
  ConvProblem p(c);
  Tensor y = Tensor::empty(p.x.sizes(), DType::kF32);
  Tensor w9 = randn({c.D, 9}, DType::kF32, 1);
  EXPECT_THROW(short_conv_forward(p.x, w9, y, {}, {}), Error);
  Tensor wd = randn({c.D + 1, 4}, DType::kF32, 1);
  EXPECT_THROW(short_conv_forward(p.x, wd, y, {}, {}), Error);
  ShortConvOptions o;
  Tensor h0 = Tensor::zeros({c.B, 2, c.D}, DType::kF32);  // W - 1 = 3 rows expected
  o.initial_state = h0;
  try {
    short_conv_forward(p.x, p.w, y, {}, o);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("initial_state"), std::string::npos) << e.what();
  }
  Tensor b = randn({c.D + 2}, DType::kF32, 1);
  o = {};
  o.bias = b;
  EXPECT_THROW(short_conv_forward(p.x, p.w, y, {}, o), Error);
  Tensor state = Tensor::zeros({c.B, c.W - 1, c.D}, DType::kF32);
  Tensor x1 = randn({c.B, c.D}, DType::kF32, 1), y1 = Tensor::empty({c.B, c.D + 1}, DType::kF32);
  EXPECT_THROW(short_conv_update(x1, p.w, state, y1, {}), Error);
  Tensor y2 = Tensor::empty({c.B, c.D}, DType::kF32);
  EXPECT_THROW(short_conv_update(x1, p.w, {}, y2, {}), Error);
}

}  // namespace
}  // namespace subq
