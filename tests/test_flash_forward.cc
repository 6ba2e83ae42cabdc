// Exact attention forward: the fast kernels against the float64 reference over the odd-shape
// grid and every option, varlen against a loop over sequences, and 1 thread against 2.
#include <gtest/gtest.h>

#include <tuple>

#include "src/flash_args.h"
#include "src/ref/flash_ref.h"
#include "subq/flash.h"
#include "subq/threads.h"
#include "tests/test_util.h"

namespace subq {
namespace {

using test::randn;
using test::rel_rms;

using Case = test::FlashCase;
using Inputs = test::FlashInputs;

FlashOutput run(const Inputs& in, FlashOptions opt, Impl impl) {
  opt.impl = impl;
  return flash_attention(in.q, in.k, in.v, opt);
}

// fast vs reference: out and lse within 1e-5 relative RMS (fp32).
void expect_matches_ref(const Case& c, const FlashOptions& opt, double tol = 1e-5) {
  Inputs in(c);
  FlashOutput fast = run(in, opt, Impl::kFast);
  FlashOutput ref = run(in, opt, Impl::kRef);
  EXPECT_LE(rel_rms(fast.out, ref.out), tol);
  EXPECT_LE(rel_rms(fast.lse, ref.lse), tol);
}

// The grid of testing_and_performance.md: T in {1, 7, 63, 64, 65, 100, 257, 1000},
// D in {16, 60, 64, 100, 128}, causal and not.
class ForwardGrid : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, bool>> {};

TEST_P(ForwardGrid, MatchesReference) {
  const auto [T, D, causal] = GetParam();
  if (test::quick() && T > 100) GTEST_SKIP() << "quick mode (sanitizer run)";
  Case c;
  c.Tq = c.Tk = T;
  c.D = c.Dv = D;
  c.H = 2;
  c.Hkv = 1;
  c.seed = static_cast<uint64_t>(T * 1000 + D);
  FlashOptions opt;
  opt.causal = causal;
  expect_matches_ref(c, opt);
}

INSTANTIATE_TEST_SUITE_P(Shapes, ForwardGrid,
                         ::testing::Combine(  // 97: one past the kernels' 96-row block.
                             ::testing::Values(1, 7, 63, 64, 65, 97, 100, 257, 1000),
                             ::testing::Values(16, 60, 64, 100, 128), ::testing::Bool()));

TEST(FlashForward, BottomRightCausalWithMoreKeysThanQueries) {
  Case c;
  c.Tq = 37;
  c.Tk = 150;
  FlashOptions opt;
  opt.causal = true;
  expect_matches_ref(c, opt);
}

TEST(FlashForward, FullyMaskedRowsGiveZeroAndMinusInf) {
  // Tq > Tk with causal: the first Tq - Tk queries see no key.
  Case c;
  c.Tq = 90;
  c.Tk = 20;
  Inputs in(c);
  FlashOptions opt;
  opt.causal = true;
  FlashOutput fast = run(in, opt, Impl::kFast);
  FlashOutput ref = run(in, opt, Impl::kRef);
  for (int64_t i = 0; i < c.Tq - c.Tk; ++i) {
    for (int64_t h = 0; h < c.H; ++h) {
      EXPECT_EQ(get_element(fast.lse, {0, h, i}), -INFINITY);
      for (int64_t d = 0; d < c.Dv; ++d) EXPECT_EQ(get_element(fast.out, {0, i, h, d}), 0.0);
    }
  }
  EXPECT_LE(rel_rms(fast.out, ref.out), 1e-5);
  EXPECT_LE(rel_rms(fast.lse, ref.lse), 1e-5);
}

TEST(FlashForward, Windows) {
  // (left, right) pairs, including one-sided, empty-ish and wider-than-T windows.
  const std::pair<int64_t, int64_t> windows[] = {{0, 0},   {3, 0},   {15, 15}, {-1, 5},
                                                 {40, -1}, {100, 0}, {0, 100}, {64, 64}};
  for (const auto& [l, r] : windows) {
    for (bool causal : {false, true}) {
      Case c;
      c.Tq = 130;
      c.Tk = 150;
      FlashOptions opt;
      opt.window_left = l;
      opt.window_right = r;
      opt.causal = causal;
      SCOPED_TRACE(::testing::Message() << "window (" << l << ", " << r << ") causal " << causal);
      expect_matches_ref(c, opt);
    }
  }
}

TEST(FlashForward, Softcap) {
  Case c;
  c.Tq = c.Tk = 77;
  FlashOptions opt;
  opt.softcap = 2.5f;
  opt.causal = true;
  opt.softmax_scale = 0.5f;  // large scores, so the cap bites
  expect_matches_ref(c, opt);
}

TEST(FlashForward, AlibiPerHeadAndPerBatch) {
  Case c;
  c.B = 2;
  c.Tq = c.Tk = 70;
  c.H = 4;
  c.Hkv = 2;
  Tensor per_head = Tensor::empty({c.H}, DType::kF32);
  for (int64_t h = 0; h < c.H; ++h)
    set_element(per_head, {h}, std::pow(2.0, -8.0 * (h + 1) / c.H));  // the standard slopes
  Tensor per_batch = test::randn({c.B, c.H}, DType::kF32, 9, 0.3);
  for (const Tensor* s : {&per_head, &per_batch}) {
    for (bool causal : {false, true}) {
      FlashOptions opt;
      opt.alibi_slopes = *s;
      opt.causal = causal;
      expect_matches_ref(c, opt);
    }
  }
}

TEST(FlashForward, GqaMqaAndValueDim) {
  for (auto [H, Hkv] : {std::pair<int64_t, int64_t>{8, 8}, {8, 2}, {6, 1}}) {
    Case c;
    c.Tq = 50;
    c.Tk = 90;
    c.H = H;
    c.Hkv = Hkv;
    c.D = 48;
    c.Dv = 80;
    FlashOptions opt;
    expect_matches_ref(c, opt);
  }
}

TEST(FlashForward, ScaleOption) {
  Case c;
  FlashOptions opt;
  opt.softmax_scale = 0.03f;
  expect_matches_ref(c, opt);
}

TEST(FlashForward, StridedViewsAreReadInPlace) {
  // q and k are slices of wider buffers (row stride != H * D), out is written into a slice.
  Case c;
  c.Tq = c.Tk = 70;
  Tensor qbuf = randn({1, c.Tq, c.H, 2 * c.D}, DType::kF32, 3);
  Tensor kbuf = randn({1, c.Tk, 3, c.D}, DType::kF32, 4);
  Tensor v = randn({1, c.Tk, c.Hkv, c.Dv}, DType::kF32, 5);
  TensorView q = qbuf.view().narrow(3, c.D, c.D);
  TensorView k = kbuf.view().narrow(2, 1, 1);
  Tensor outbuf = Tensor::zeros({1, c.Tq, c.H, c.Dv + 8}, DType::kF32);
  TensorView out = outbuf.view().narrow(3, 4, c.Dv);
  Tensor lse = Tensor::empty({1, c.H, c.Tq}, DType::kF32);
  FlashOptions opt;
  opt.causal = true;
  flash_attention_forward(q, k, v, out, lse, opt);
  opt.impl = Impl::kRef;
  FlashOutput ref = flash_attention(q, k, v, opt);
  EXPECT_LE(rel_rms(out, ref.out), 1e-5);
  EXPECT_LE(rel_rms(lse, ref.lse), 1e-5);
  // The padding around the output slice is untouched.
  EXPECT_EQ(get_element(outbuf, {0, 5, 1, 0}), 0.0);
  EXPECT_EQ(get_element(outbuf, {0, 5, 1, c.Dv + 4}), 0.0);
}

TEST(FlashForward, NonUnitInnerStrideIsAccepted) {
  Case c;
  c.Tq = c.Tk = 33;
  Tensor qbuf = randn({1, c.Tq, c.H, c.D, 2}, DType::kF32, 3);
  TensorView q(qbuf.data(), DType::kF32, {1, c.Tq, c.H, c.D},
               {c.Tq * c.H * c.D * 2, c.H * c.D * 2, c.D * 2, 2});
  Inputs in(c);
  FlashOptions opt;
  FlashOutput fast = flash_attention(q, in.k, in.v, opt);
  // An output with inner stride 2 is computed into a temporary and copied back.
  Tensor obuf = Tensor::zeros({1, c.Tq, c.H, c.Dv, 2}, DType::kF32);
  TensorView out(obuf.data(), DType::kF32, {1, c.Tq, c.H, c.Dv},
                 {c.Tq * c.H * c.Dv * 2, c.H * c.Dv * 2, c.Dv * 2, 2});
  Tensor lse = Tensor::empty({1, c.H, c.Tq}, DType::kF32);
  flash_attention_forward(q, in.k, in.v, out, lse, opt);
  opt.impl = Impl::kRef;
  FlashOutput ref = flash_attention(q, in.k, in.v, opt);
  EXPECT_LE(rel_rms(fast.out, ref.out), 1e-5);
  EXPECT_LE(rel_rms(out, ref.out), 1e-5);
  EXPECT_EQ(get_element(obuf, {0, 3, 1, 5, 1}), 0.0);  // the gaps stay untouched
}

TEST(FlashForward, VarlenMatchesLoopOverSequences) {
  const std::vector<int64_t> tq = {5, 64, 0, 100, 1}, tk = {9, 64, 7, 130, 1};
  const int64_t H = 4, Hkv = 2, D = 32;
  int64_t sq = 0, sk = 0;
  for (size_t n = 0; n < tq.size(); ++n) sq += tq[n], sk += tk[n];
  Tensor q = randn({1, sq, H, D}, DType::kF32, 11);
  Tensor k = randn({1, sk, Hkv, D}, DType::kF32, 12);
  Tensor v = randn({1, sk, Hkv, D}, DType::kF32, 13);
  Tensor cuq = Tensor::empty({static_cast<int64_t>(tq.size()) + 1}, DType::kI32);
  Tensor cuk = Tensor::empty({static_cast<int64_t>(tq.size()) + 1}, DType::kI64);
  int64_t oq = 0, ok = 0;
  for (size_t n = 0; n <= tq.size(); ++n) {
    set_element(cuq, {static_cast<int64_t>(n)}, static_cast<double>(oq));
    set_element(cuk, {static_cast<int64_t>(n)}, static_cast<double>(ok));
    if (n < tq.size()) oq += tq[n], ok += tk[n];
  }
  for (bool causal : {false, true}) {
    FlashOptions opt;
    opt.causal = causal;
    opt.cu_seqlens_q = cuq;
    opt.cu_seqlens_k = cuk;
    FlashOutput packed = flash_attention(q, k, v, opt);
    FlashOptions one;
    one.causal = causal;
    oq = ok = 0;
    for (size_t n = 0; n < tq.size(); ++n) {
      if (tq[n] > 0 && tk[n] > 0) {
        TensorView qn = q.view().narrow(1, oq, tq[n]);
        Tensor kn = Tensor::copy_of(k.view().narrow(1, ok, tk[n]));
        Tensor vn = Tensor::copy_of(v.view().narrow(1, ok, tk[n]));
        FlashOutput single = flash_attention(qn, kn, vn, one);
        EXPECT_EQ(test::max_abs_diff(test::values(packed.out.view().narrow(1, oq, tq[n])),
                                     test::values(single.out)),
                  0.0)
            << "sequence " << n;
        EXPECT_EQ(test::max_abs_diff(test::values(packed.lse.view().narrow(2, oq, tq[n])),
                                     test::values(single.lse)),
                  0.0)
            << "sequence " << n;
      }
      oq += tq[n];
      ok += tk[n];
    }
    // And against the reference on the packed batch directly.
    opt.impl = Impl::kRef;
    FlashOutput ref = flash_attention(q, k, v, opt);
    EXPECT_LE(rel_rms(packed.out, ref.out), 1e-5);
  }
}

TEST(FlashForward, OneThreadEqualsTwoThreadsBitwise) {
  Case c;
  c.B = 2;
  c.Tq = c.Tk = 300;
  c.H = 3;
  c.Hkv = 3;
  Inputs in(c);
  FlashOptions opt;
  opt.causal = true;
  const int saved = num_threads();
  set_num_threads(1);
  FlashOutput one = flash_attention(in.q, in.k, in.v, opt);
  set_num_threads(2);
  FlashOutput two = flash_attention(in.q, in.k, in.v, opt);
  set_num_threads(saved);
  EXPECT_EQ(test::max_abs_diff(test::values(one.out), test::values(two.out)), 0.0);
  EXPECT_EQ(test::max_abs_diff(test::values(one.lse), test::values(two.lse)), 0.0);
}

// bf16 and f16 inputs: error against the float64 reference on the same (rounded) inputs
// <= 5e-3, and <= 2x the error of the reference itself computed in that precision.
class ForwardLowPrecision : public ::testing::TestWithParam<std::tuple<DType, bool, int64_t>> {};

TEST_P(ForwardLowPrecision, WithinTwiceTheReferenceInThatPrecision) {
  const auto [dt, causal, T] = GetParam();
  Case c;
  c.Tq = c.Tk = T;
  c.D = c.Dv = 64;
  c.dt = dt;
  Inputs in(c);
  FlashOptions opt;
  opt.causal = causal;
  FlashOutput fast = run(in, opt, Impl::kFast);
  EXPECT_EQ(fast.out.dtype(), dt);
  // The float64 reference and the emulated low-precision reference, both into f32 outputs.
  Tensor ref_out = Tensor::empty({c.B, c.Tq, c.H, c.Dv}, DType::kF32);
  Tensor ref_lse = Tensor::empty({c.B, c.H, c.Tq}, DType::kF32);
  Tensor low_out = Tensor::empty({c.B, c.Tq, c.H, c.Dv}, DType::kF32);
  Tensor low_lse = Tensor::empty({c.B, c.H, c.Tq}, DType::kF32);
  ref::flash_forward(detail::make_flash_forward_args(in.q, in.k, in.v, ref_out, ref_lse, opt));
  ref::flash_forward(detail::make_flash_forward_args(in.q, in.k, in.v, low_out, low_lse, opt), dt);
  const double err = rel_rms(fast.out, ref_out);
  const double ref_err = rel_rms(low_out, ref_out);
  EXPECT_LE(err, 5e-3);
  EXPECT_LE(err, 2 * ref_err) << "reference-in-" << dtype_name(dt) << " error " << ref_err;
  EXPECT_LE(rel_rms(fast.lse, ref_lse), 1e-5);  // lse is computed and returned in f32
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ForwardLowPrecision,
                         ::testing::Combine(::testing::Values(DType::kBF16, DType::kF16),
                                            ::testing::Bool(), ::testing::Values(65, 257)));

}  // namespace
}  // namespace subq
