// Linear + sliding-window hybrid: the definition pinned on a hand computation, the float64
// reference against finite differences, the fast path against the reference, and decode steps
// against the forward.
#include <gtest/gtest.h>

#include <cmath>

#include "subq/error.h"
#include "subq/hybrid.h"
#include "tests/test_util.h"

namespace subq {
namespace {

using test::randn;
using test::rel_rms;

struct HybridCase {
  int64_t B = 2, T = 40, H = 2, d = 8, f = 12, dv = 6, w = 5, M = 0;
  bool gate = false;
  DType dt = DType::kF32;
  uint64_t seed = 1;
};

struct HybridProblem {
  HybridCase c;
  Tensor q, k, fq, fk, v, dout, wf, g, mk, mv;
  HybridOptions opt;
  explicit HybridProblem(const HybridCase& cs) : c(cs) {
    const DType pdt = c.dt == DType::kF64 ? DType::kF64 : DType::kF32;
    q = randn({c.B, c.T, c.H, c.d}, c.dt, c.seed);
    k = randn({c.B, c.T, c.H, c.d}, c.dt, c.seed + 1);
    // Positive features, as a feature map gives.
    fq = Tensor::empty({c.B, c.T, c.H, c.f}, c.dt);
    fk = Tensor::empty({c.B, c.T, c.H, c.f}, c.dt);
    fill_uniform(fq, c.seed + 2, 0.1, 1.0);
    fill_uniform(fk, c.seed + 3, 0.1, 1.0);
    v = randn({c.B, c.T, c.H, c.dv}, c.dt, c.seed + 4);
    dout = randn({c.B, c.T, c.H, c.dv}, c.dt, c.seed + 5);
    wf = randn({c.H}, pdt, c.seed + 6);
    opt.window = c.w;
    opt.window_factor = wf;
    if (c.gate) {
      g = Tensor::empty({c.B, c.T, c.H}, c.dt);
      fill_uniform(g, c.seed + 7, -0.5, -0.01);
      opt.g = g;
    }
    if (c.M > 0) {
      mk = randn({c.H, c.M, c.d}, c.dt, c.seed + 8);
      mv = randn({c.H, c.M, c.dv}, c.dt, c.seed + 9);
      opt.meta_k = mk;
      opt.meta_v = mv;
    }
  }
  Tensor forward(HybridOptions o) const {
    Tensor out = Tensor::empty(v.sizes(), v.dtype());
    hybrid_attention_forward(q, k, fq, fk, v, out, o);
    return out;
  }
  struct Grads {
    Tensor dq, dk, dfq, dfk, dv, dwf, dg, dmk, dmv;
  };
  Grads backward(HybridOptions o) const {
    Grads t;
    HybridGrads g2;
    g2.dq = t.dq = Tensor::empty(q.sizes(), q.dtype());
    g2.dk = t.dk = Tensor::empty(k.sizes(), q.dtype());
    g2.dfq = t.dfq = Tensor::empty(fq.sizes(), q.dtype());
    g2.dfk = t.dfk = Tensor::empty(fk.sizes(), q.dtype());
    g2.dv = t.dv = Tensor::empty(v.sizes(), q.dtype());
    g2.dwindow_factor = t.dwf = Tensor::empty(wf.sizes(), wf.dtype());
    if (g.defined()) g2.dg = t.dg = Tensor::empty(g.sizes(), g.dtype());
    if (mk.defined()) {
      g2.dmeta_k = t.dmk = Tensor::empty(mk.sizes(), mk.dtype());
      g2.dmeta_v = t.dmv = Tensor::empty(mv.sizes(), mv.dtype());
    }
    hybrid_attention_backward(q, k, fq, fk, v, dout, g2, o);
    return t;
  }
};

TEST(Hybrid, DefinitionByHand) {
  // T = 4, w = 2: query 3 sees keys 2, 3 in the window and keys 0, 1 linearly; the linear term
  // is not rescaled by exp(-c).
  HybridCase c;
  c.B = 1;
  c.T = 4;
  c.H = 1;
  c.d = 2;
  c.f = 2;
  c.dv = 1;
  c.w = 2;
  HybridProblem p(c);
  const double gamma = 1.0 / (1.0 + std::exp(-get_element(p.wf, {0})));
  auto at = [](const Tensor& t, int64_t r, int64_t i) { return get_element(t, {0, r, 0, i}); };
  const double scale = 1.0 / std::sqrt(2.0);
  const double s2 = scale * (at(p.q, 3, 0) * at(p.k, 2, 0) + at(p.q, 3, 1) * at(p.k, 2, 1));
  const double s3 = scale * (at(p.q, 3, 0) * at(p.k, 3, 0) + at(p.q, 3, 1) * at(p.k, 3, 1));
  const double cmax = std::max(s2, s3);
  double num = gamma * (std::exp(s2 - cmax) * at(p.v, 2, 0) + std::exp(s3 - cmax) * at(p.v, 3, 0));
  double den = gamma * (std::exp(s2 - cmax) + std::exp(s3 - cmax));
  for (int64_t j : {0, 1}) {
    const double wgt = at(p.fq, 3, 0) * at(p.fk, j, 0) + at(p.fq, 3, 1) * at(p.fk, j, 1);
    num += wgt * at(p.v, j, 0);
    den += wgt;
  }
  for (Impl impl : {Impl::kRef, Impl::kFast}) {
    HybridOptions o = p.opt;
    o.impl = impl;
    EXPECT_NEAR(get_element(p.forward(o), {0, 3, 0, 0}), num / den, 1e-6);
  }
  EXPECT_NEAR(1.0 / (1.0 + std::exp(-kHybridWindowFactorInit)), 0.1, 1e-6);
}

TEST(Hybrid, ReferenceFiniteDifferences) {
  for (bool gate : {false, true}) {
    for (int64_t M : {0, 2}) {
      HybridCase c;
      c.B = 1;
      c.T = 9;
      c.d = 3;
      c.f = 4;
      c.dv = 3;
      c.w = 3;
      c.M = M;
      c.gate = gate;
      c.dt = DType::kF64;
      HybridProblem p(c);
      HybridOptions o = p.opt;
      o.impl = Impl::kRef;
      auto loss = [&] {
        const auto y = test::values(p.forward(o)), d = test::values(p.dout);
        double s = 0;
        for (size_t i = 0; i < y.size(); ++i) s += y[i] * d[i];
        return s;
      };
      HybridProblem::Grads g = p.backward(o);
      std::vector<std::tuple<Tensor*, Tensor*, const char*>> params = {
          {&p.q, &g.dq, "q"},    {&p.k, &g.dk, "k"}, {&p.fq, &g.dfq, "fq"},
          {&p.fk, &g.dfk, "fk"}, {&p.v, &g.dv, "v"}, {&p.wf, &g.dwf, "window_factor"}};
      if (gate) params.push_back({&p.g, &g.dg, "g"});
      if (M) {
        params.push_back({&p.mk, &g.dmk, "meta_k"});
        params.push_back({&p.mv, &g.dmv, "meta_v"});
      }
      for (auto [x, gx, name] : params) {
        const auto analytic = test::values(*gx);
        std::vector<double> numeric(analytic.size());
        for (int64_t i = 0; i < x->numel(); ++i) {
          const double v0 = load_at(*x, i), eps = 1e-6;
          store_at(*x, i, v0 + eps);
          const double up = loss();
          store_at(*x, i, v0 - eps);
          const double down = loss();
          store_at(*x, i, v0);
          numeric[i] = (up - down) / (2 * eps);
        }
        EXPECT_LE(rel_rms(analytic, numeric), 1e-6) << name << " gate " << gate << " M " << M;
      }
    }
  }
}

TEST(Hybrid, FastMatchesReference) {
  for (bool gate : {false, true}) {
    for (int64_t M : {0, 4}) {
      for (int64_t w : {1, 16, 64}) {
        HybridCase c;
        c.T = 150;
        c.w = w;
        c.M = M;
        c.gate = gate;
        HybridProblem p(c);
        HybridOptions ref = p.opt;
        ref.impl = Impl::kRef;
        SCOPED_TRACE(::testing::Message() << "gate " << gate << " M " << M << " w " << w);
        EXPECT_LE(rel_rms(p.forward(p.opt), p.forward(ref)), 1e-5);
        HybridProblem::Grads gf = p.backward(p.opt), gr = p.backward(ref);
        EXPECT_LE(rel_rms(gf.dq, gr.dq), 1e-5);
        EXPECT_LE(rel_rms(gf.dk, gr.dk), 1e-5);
        EXPECT_LE(rel_rms(gf.dfq, gr.dfq), 1e-5);
        EXPECT_LE(rel_rms(gf.dfk, gr.dfk), 1e-5);
        EXPECT_LE(rel_rms(gf.dv, gr.dv), 1e-5);
        EXPECT_LE(rel_rms(gf.dwf, gr.dwf), 1e-5);
        if (gate) {
          EXPECT_LE(rel_rms(gf.dg, gr.dg), 1e-5);
        }
        if (M) {
          EXPECT_LE(rel_rms(gf.dmk, gr.dmk), 1e-5);
          EXPECT_LE(rel_rms(gf.dmv, gr.dmv), 1e-5);
        }
      }
    }
  }
}

TEST(Hybrid, DecodeStepsMatchForward) {
  for (bool gate : {false, true}) {
    HybridCase c;
    c.T = 60;
    c.w = 8;
    c.M = 3;
    c.gate = gate;
    HybridProblem p(c);
    const Tensor full = p.forward(p.opt);
    HybridCache cache = HybridCache::create(c.B, c.H, c.d, c.f, c.dv, c.w);
    const size_t bytes = cache.nbytes();
    const int64_t T1 = 20;
    auto part = [&](const Tensor& t, int64_t t0, int64_t n) { return t.view().narrow(1, t0, n); };
    hybrid_cache_prefill(part(p.k, 0, T1), part(p.fk, 0, T1), part(p.v, 0, T1),
                         gate ? part(p.g, 0, T1) : TensorView(), cache, p.opt);
    for (int64_t t = T1; t < c.T; ++t) {
      Tensor out = Tensor::empty({c.B, 1, c.H, c.dv}, DType::kF32);
      hybrid_attention_step(part(p.q, t, 1), part(p.k, t, 1), part(p.fq, t, 1), part(p.fk, t, 1),
                            part(p.v, t, 1), gate ? part(p.g, t, 1) : TensorView(), cache, out,
                            p.opt);
      EXPECT_LE(rel_rms(out, full.view().narrow(1, t, 1)), 1e-5) << "t " << t << " gate " << gate;
    }
    EXPECT_EQ(cache.nbytes(), bytes);  // constant memory in the context length
  }
}

TEST(Hybrid, BadInput) {
  HybridCase c;
  HybridProblem p(c);
  HybridOptions o = p.opt;
  o.window = 0;
  EXPECT_THROW(p.forward(o), Error);
  o = p.opt;
  o.window_factor = TensorView();
  EXPECT_THROW(p.forward(o), Error);
  o = p.opt;
  Tensor g = Tensor::zeros({c.B, c.T, c.H}, DType::kF32);
  set_element(g, {0, 3, 1}, 0.5);
  o.g = g;
  EXPECT_THROW(p.forward(o), Error);
  o = p.opt;
  Tensor mk = randn({c.H, 2, c.d}, DType::kF32, 1);
  o.meta_k = mk;
  EXPECT_THROW(p.forward(o), Error);  // meta_v missing
  Tensor fk = randn({c.B, c.T, c.H, c.f + 1}, DType::kF32, 1);
  Tensor out = Tensor::empty(p.v.sizes(), DType::kF32);
  EXPECT_THROW(hybrid_attention_forward(p.q, p.k, p.fq, fk, p.v, out, p.opt), Error);
}

}  // namespace
}  // namespace subq

namespace subq {
namespace {

TEST(Hybrid, Bf16Inputs) {
  HybridCase c;
  c.T = 100;
  c.w = 16;
  c.gate = true;
  c.dt = DType::kBF16;
  HybridProblem p(c);
  HybridOptions ref = p.opt;
  ref.impl = Impl::kRef;
  Tensor yr = Tensor::empty(p.v.sizes(), DType::kF32);
  hybrid_attention_forward(p.q, p.k, p.fq, p.fk, p.v, yr, ref);
  EXPECT_LE(rel_rms(p.forward(p.opt), yr), 5e-3);
}

}  // namespace
}  // namespace subq
