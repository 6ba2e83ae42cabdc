// Exact attention backward: the float64 reference against central finite differences, then the
// fast kernels against the reference over the shape grid and every option.
#include <gtest/gtest.h>

#include <functional>
#include <tuple>

#include "subq/flash.h"
#include "subq/threads.h"
#include "tests/test_util.h"

namespace subq {
namespace {

using test::randn;
using test::rel_rms;

using Case = test::FlashCase;
using Problem = test::FlashInputs;

FlashGrads grads(const Problem& p, FlashOptions opt, Impl impl) {
  opt.impl = impl;
  FlashOutput f = flash_attention(p.q, p.k, p.v, opt);
  return flash_attention_grad(p.q, p.k, p.v, f.out, f.lse, p.dout, opt);
}

void expect_grads_match(const FlashGrads& a, const FlashGrads& b, double tol) {
  EXPECT_LE(rel_rms(a.dq, b.dq), tol) << "dq";
  EXPECT_LE(rel_rms(a.dk, b.dk), tol) << "dk";
  EXPECT_LE(rel_rms(a.dv, b.dv), tol) << "dv";
}

void expect_fast_matches_ref(const Case& c, const FlashOptions& opt, double tol = 1e-5) {
  Problem p(c);
  expect_grads_match(grads(p, opt, Impl::kFast), grads(p, opt, Impl::kRef), tol);
}

// ---- The reference against finite differences (float64 throughout) ----

// loss = sum(dout * out). Its gradient with respect to every element of q, k and v, by central
// differences of the reference forward, against the reference backward.
void check_reference_by_finite_differences(const Case& c, const FlashOptions& base) {
  FlashOptions opt = base;
  opt.impl = Impl::kRef;
  Case c64 = c;
  c64.dt = DType::kF64;
  Problem p(c64);
  auto loss = [&] {
    FlashOutput f = flash_attention(p.q, p.k, p.v, opt);
    const auto o = test::values(f.out), d = test::values(p.dout);
    double s = 0;
    for (size_t i = 0; i < o.size(); ++i) s += o[i] * d[i];
    return s;
  };
  FlashOutput f = flash_attention(p.q, p.k, p.v, opt);
  FlashGrads g = flash_attention_grad(p.q, p.k, p.v, f.out, f.lse, p.dout, opt);
  const double eps = 1e-6;
  for (auto [t, gt, name] : {std::tuple<Tensor*, Tensor*, const char*>{&p.q, &g.dq, "dq"},
                             {&p.k, &g.dk, "dk"},
                             {&p.v, &g.dv, "dv"}}) {
    double* x = t->data_as<double>();
    const auto analytic = test::values(*gt);
    std::vector<double> numeric(analytic.size());
    for (int64_t i = 0; i < t->numel(); ++i) {
      const double x0 = x[i];
      x[i] = x0 + eps;
      const double up = loss();
      x[i] = x0 - eps;
      const double down = loss();
      x[i] = x0;
      numeric[i] = (up - down) / (2 * eps);
    }
    EXPECT_LE(rel_rms(analytic, numeric), 1e-6) << name;
  }
}

TEST(FlashBackwardReference, FiniteDifferences) {
  Case c;
  c.B = 2;
  c.Tq = 5;
  c.Tk = 7;
  c.H = 4;
  c.Hkv = 2;
  c.D = 4;
  c.Dv = 3;
  Tensor slopes = randn({c.B, c.H}, DType::kF32, 7, 0.5);
  struct Variant {
    const char* name;
    std::function<void(FlashOptions&)> set;
  };
  const Variant variants[] = {
      {"plain", [](FlashOptions&) {}},
      {"causal", [](FlashOptions& o) { o.causal = true; }},
      {"window (2, 1)", [](FlashOptions& o) { o.window_left = 2, o.window_right = 1; }},
      {"softcap 1.5", [](FlashOptions& o) { o.softcap = 1.5f, o.softmax_scale = 1.f; }},
      {"alibi causal", [&](FlashOptions& o) { o.alibi_slopes = slopes, o.causal = true; }},
      {"softcap + alibi + window",
       [&](FlashOptions& o) {
         o.softcap = 1.5f, o.softmax_scale = 1.f, o.alibi_slopes = slopes, o.window_left = 3;
       }},
  };
  for (const auto& v : variants) {
    SCOPED_TRACE(v.name);
    FlashOptions opt;
    v.set(opt);
    check_reference_by_finite_differences(c, opt);
  }
}

TEST(FlashBackwardReference, FiniteDifferencesWithFullyMaskedRows) {
  Case c;
  c.Tq = 6;
  c.Tk = 3;  // causal: the first 3 queries see nothing
  c.D = c.Dv = 4;
  FlashOptions opt;
  opt.causal = true;
  check_reference_by_finite_differences(c, opt);
}

// ---- The fast kernels against the reference ----

class BackwardGrid : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, bool>> {};

TEST_P(BackwardGrid, MatchesReference) {
  const auto [T, D, causal] = GetParam();
  if (test::quick() && T > 100) GTEST_SKIP() << "quick mode (sanitizer run)";
  Case c;
  c.Tq = c.Tk = T;
  c.D = c.Dv = D;
  c.seed = static_cast<uint64_t>(T * 1000 + D + 7);
  FlashOptions opt;
  opt.causal = causal;
  expect_fast_matches_ref(c, opt);
}

INSTANTIATE_TEST_SUITE_P(Shapes, BackwardGrid,
                         ::testing::Combine(  // 97: one past the kernels' 96-row block.
                             ::testing::Values(1, 7, 63, 64, 65, 97, 100, 257, 1000),
                             ::testing::Values(16, 60, 64, 100, 128), ::testing::Bool()));

TEST(FlashBackward, Options) {
  Tensor slopes = Tensor::empty({4}, DType::kF32);
  for (int64_t h = 0; h < 4; ++h) set_element(slopes, {h}, std::pow(2.0, -2.0 * (h + 1)));
  struct Variant {
    const char* name;
    std::function<void(FlashOptions&)> set;
  };
  const Variant variants[] = {
      {"window (20, 5)", [](FlashOptions& o) { o.window_left = 20, o.window_right = 5; }},
      {"sliding (31, 0)", [](FlashOptions& o) { o.window_left = 31, o.window_right = 0; }},
      {"softcap",
       [](FlashOptions& o) { o.softcap = 3.f, o.softmax_scale = 0.4f, o.causal = true; }},
      {"alibi", [&](FlashOptions& o) { o.alibi_slopes = slopes; }},
      {"softcap + alibi", [&](FlashOptions& o) { o.softcap = 2.f, o.alibi_slopes = slopes; }},
      {"scale", [](FlashOptions& o) { o.softmax_scale = 0.05f; }},
  };
  for (const auto& v : variants) {
    SCOPED_TRACE(v.name);
    Case c;
    c.Tq = 110;
    c.Tk = 140;
    c.H = 4;
    c.Hkv = 2;
    c.D = 48;
    c.Dv = 40;
    FlashOptions opt;
    v.set(opt);
    expect_fast_matches_ref(c, opt);
  }
}

TEST(FlashBackward, GqaReducesOverTheGroup) {
  for (auto [H, Hkv] : {std::pair<int64_t, int64_t>{8, 2}, {6, 1}, {3, 3}}) {
    Case c;
    c.Tq = c.Tk = 90;
    c.H = H;
    c.Hkv = Hkv;
    FlashOptions opt;
    opt.causal = true;
    expect_fast_matches_ref(c, opt);
  }
}

TEST(FlashBackward, FullyMaskedRowsGetZeroGradient) {
  Case c;
  c.Tq = 80;
  c.Tk = 30;
  FlashOptions opt;
  opt.causal = true;
  Problem p(c);
  FlashGrads g = grads(p, opt, Impl::kFast);
  for (int64_t i = 0; i < c.Tq - c.Tk; ++i)
    for (int64_t d = 0; d < c.D; ++d) EXPECT_EQ(get_element(g.dq, {0, i, 1, d}), 0.0);
  expect_grads_match(g, grads(p, opt, Impl::kRef), 1e-5);
}

TEST(FlashBackward, VarlenMatchesLoopOverSequences) {
  const std::vector<int64_t> tq = {70, 0, 5, 130}, tk = {70, 9, 12, 100};
  const int64_t H = 2, Hkv = 1, D = 32;
  int64_t sq = 0, sk = 0;
  for (size_t n = 0; n < tq.size(); ++n) sq += tq[n], sk += tk[n];
  // Two extra rows at the end that no sequence covers: their gradients must be zero.
  Tensor q = randn({1, sq + 2, H, D}, DType::kF32, 1),
         k = randn({1, sk + 2, Hkv, D}, DType::kF32, 2);
  Tensor v = randn({1, sk + 2, Hkv, D}, DType::kF32, 3),
         dout = randn({1, sq + 2, H, D}, DType::kF32, 4);
  Tensor cuq = Tensor::empty({5}, DType::kI32), cuk = Tensor::empty({5}, DType::kI32);
  int64_t oq = 0, ok = 0;
  for (int64_t n = 0; n <= 4; ++n) {
    set_element(cuq, {n}, static_cast<double>(oq));
    set_element(cuk, {n}, static_cast<double>(ok));
    if (n < 4) oq += tq[n], ok += tk[n];
  }
  FlashOptions opt;
  opt.causal = true;
  opt.cu_seqlens_q = cuq;
  opt.cu_seqlens_k = cuk;
  FlashOutput f = flash_attention(q, k, v, opt);
  FlashGrads g = flash_attention_grad(q, k, v, f.out, f.lse, dout, opt);
  FlashOptions one;
  one.causal = true;
  oq = ok = 0;
  for (size_t n = 0; n < tq.size(); ++n) {
    if (tq[n] > 0) {
      Tensor qn = Tensor::copy_of(q.view().narrow(1, oq, tq[n]));
      Tensor kn = Tensor::copy_of(k.view().narrow(1, ok, tk[n]));
      Tensor vn = Tensor::copy_of(v.view().narrow(1, ok, tk[n]));
      Tensor dn = Tensor::copy_of(dout.view().narrow(1, oq, tq[n]));
      FlashOutput fn = flash_attention(qn, kn, vn, one);
      FlashGrads gn = flash_attention_grad(qn, kn, vn, fn.out, fn.lse, dn, one);
      EXPECT_LE(rel_rms(g.dq.view().narrow(1, oq, tq[n]), gn.dq), 1e-6) << n;
      EXPECT_LE(rel_rms(g.dk.view().narrow(1, ok, tk[n]), gn.dk), 1e-6) << n;
      EXPECT_LE(rel_rms(g.dv.view().narrow(1, ok, tk[n]), gn.dv), 1e-6) << n;
    } else {  // keys of a sequence without queries get no gradient
      for (double x : test::values(g.dk.view().narrow(1, ok, tk[n]))) EXPECT_EQ(x, 0.0);
    }
    oq += tq[n];
    ok += tk[n];
  }
  for (double x : test::values(g.dq.view().narrow(1, sq, 2))) EXPECT_EQ(x, 0.0);
  for (double x : test::values(g.dk.view().narrow(1, sk, 2))) EXPECT_EQ(x, 0.0);
  for (double x : test::values(g.dv.view().narrow(1, sk, 2))) EXPECT_EQ(x, 0.0);
}

TEST(FlashBackward, LowPrecisionInputs) {
  // bf16 and f16 in, gradients out in the same dtype: within 5e-3 of the float64 reference on
  // the same inputs.
  for (DType dt : {DType::kBF16, DType::kF16}) {
    Case c;
    c.Tq = c.Tk = 100;
    c.dt = dt;
    Problem p(c);
    FlashOptions opt;
    opt.causal = true;
    FlashGrads fast = grads(p, opt, Impl::kFast);
    EXPECT_EQ(fast.dq.dtype(), dt);
    // Reference in f64 from the same (rounded) inputs.
    Problem p64 = p;
    p64.q = Tensor::copy_of(p.q, DType::kF64);
    p64.k = Tensor::copy_of(p.k, DType::kF64);
    p64.v = Tensor::copy_of(p.v, DType::kF64);
    p64.dout = Tensor::copy_of(p.dout, DType::kF64);
    expect_grads_match(fast, grads(p64, opt, Impl::kRef), 5e-3);
  }
}

TEST(FlashBackward, OneThreadAgainstTwo) {
  Case c;
  c.B = 2;
  c.Tq = c.Tk = 300;
  c.H = 4;
  c.Hkv = 2;
  Problem p(c);
  FlashOptions opt;
  opt.causal = true;
  const int saved = num_threads();
  set_num_threads(1);
  FlashGrads one = grads(p, opt, Impl::kFast);
  set_num_threads(2);
  FlashGrads two = grads(p, opt, Impl::kFast);
  set_num_threads(saved);
  // dK and dV are owned by one work item each: identical. dQ sums in completion order.
  EXPECT_EQ(test::max_abs_diff(test::values(one.dk), test::values(two.dk)), 0.0);
  EXPECT_EQ(test::max_abs_diff(test::values(one.dv), test::values(two.dv)), 0.0);
  EXPECT_LE(rel_rms(two.dq, one.dq), 1e-6);
}

}  // namespace
}  // namespace subq
