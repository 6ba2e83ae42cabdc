// Every SIMD target compiled into the kernels that this CPU can run, down to the portable
// fallback (EMU128), computes the same results: each is forced in turn and checked against the
// float64 reference. This is what keeps the fallback path for machines without AVX2 honest.
#include <gtest/gtest.h>

#include "subq/backend.h"
#include "subq/error.h"
#include "subq/flash.h"
#include "subq/gemm.h"
#include "subq/matvec.h"
#include "tests/test_util.h"

namespace subq {
namespace {

using test::randn;
using test::rel_rms;

class ForcedTarget : public ::testing::Test {
 protected:
  void TearDown() override { force_simd_target(0); }
};

TEST_F(ForcedTarget, EveryTargetMatchesTheReference) {
  const auto targets = available_simd_targets();
  ASSERT_FALSE(targets.empty());
  bool has_fallback = false;
  for (const auto& [bits, name] : targets) {
    SCOPED_TRACE(name);
    has_fallback |= name == "EMU128" || name == "SCALAR";
    force_simd_target(bits);
    EXPECT_EQ(simd_target(), name);

    Tensor q = randn({2, 130, 4, 60}, DType::kF32, 1), k = randn({2, 110, 2, 60}, DType::kF32, 2);
    Tensor v = randn({2, 110, 2, 36}, DType::kF32, 3),
           dout = randn({2, 130, 4, 36}, DType::kF32, 4);
    Tensor slopes = randn({4}, DType::kF32, 5, 0.1);
    FlashOptions opt;
    opt.causal = true;
    opt.softcap = 4.f;
    opt.alibi_slopes = slopes;
    FlashOutput f = flash_attention(q, k, v, opt);
    FlashGrads g = flash_attention_grad(q, k, v, f.out, f.lse, dout, opt);
    FlashOptions ropt = opt;
    ropt.impl = Impl::kRef;
    FlashOutput rf = flash_attention(q, k, v, ropt);
    FlashGrads rg = flash_attention_grad(q, k, v, f.out, f.lse, dout, ropt);
    EXPECT_LE(rel_rms(f.out, rf.out), 1e-5);
    EXPECT_LE(rel_rms(f.lse, rf.lse), 1e-5);
    EXPECT_LE(rel_rms(g.dq, rg.dq), 1e-5);
    EXPECT_LE(rel_rms(g.dk, rg.dk), 1e-5);
    EXPECT_LE(rel_rms(g.dv, rg.dv), 1e-5);

    // bf16 inputs take the conversion paths.
    Tensor qb = Tensor::copy_of(q, DType::kBF16), kb = Tensor::copy_of(k, DType::kBF16);
    Tensor vb = Tensor::copy_of(v, DType::kBF16);
    FlashOutput fb = flash_attention(qb, kb, vb, opt);
    Tensor ro = Tensor::empty({2, 130, 4, 36}, DType::kF32),
           rl = Tensor::empty({2, 4, 130}, DType::kF32);
    flash_attention_forward(qb, kb, vb, ro, rl, ropt);
    EXPECT_LE(rel_rms(fb.out, ro), 5e-3);

    // Decode, split over several ranges.
    Tensor kc = randn({2, 600, 2, 60}, DType::kF32, 6), vc = randn({2, 600, 2, 36}, DType::kF32, 7);
    Tensor kc2 = Tensor::copy_of(kc), vc2 = Tensor::copy_of(vc);
    Tensor q1 = randn({2, 1, 4, 60}, DType::kF32, 8);
    Tensor lens = Tensor::empty({2}, DType::kI32);
    set_element(lens, {0}, 600);
    set_element(lens, {1}, 333);
    Tensor o1 = Tensor::empty({2, 1, 4, 36}, DType::kF32),
           l1 = Tensor::empty({2, 4, 1}, DType::kF32);
    Tensor o2 = Tensor::empty({2, 1, 4, 36}, DType::kF32),
           l2 = Tensor::empty({2, 4, 1}, DType::kF32);
    FlashDecodeOptions dopt;
    dopt.num_splits = 3;
    flash_attention_decode(q1, kc, vc, lens, {}, {}, o1, l1, dopt);
    dopt.impl = Impl::kRef;
    flash_attention_decode(q1, kc2, vc2, lens, {}, {}, o2, l2, dopt);
    EXPECT_LE(rel_rms(o1, o2), 1e-5);
    EXPECT_LE(rel_rms(l1, l2), 1e-5);

    // The GEMM: a in place times a transposed b (the gathered pack), and a transposed (packed).
    for (bool a_t : {false, true}) {
      const int64_t M = 37, N = 70, K = 300;
      Tensor a =
          randn(a_t ? std::vector<int64_t>{K, M} : std::vector<int64_t>{M, K}, DType::kF32, 9);
      Tensor b = randn({N, K}, DType::kF32, 10), c = Tensor::empty({M, N}, DType::kF32);
      gemm(a_t ? TensorView(a.data(), DType::kF32, {M, K}, {1, M}) : a.view(),
           TensorView(b.data(), DType::kF32, {K, N}, {1, K}), c.view());
      std::vector<double> want(M * N, 0.0), got = test::values(c.view());
      const float *ap = a.data_as<float>(), *bp = b.data_as<float>();
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n)
          for (int64_t k = 0; k < K; ++k)
            want[m * N + n] += double(a_t ? ap[k * M + m] : ap[m * K + k]) * bp[n * K + k];
      EXPECT_LE(rel_rms(got, want), 1e-6) << "gemm, a transposed: " << a_t;
    }

    // matvec with bf16 weights, one row of x (the deinterleaved path) and three.
    for (int64_t n : {1, 3}) {
      const int64_t rows = 70, cols = 203;  // a tail after the 4- and 2-vector steps
      Tensor w = randn({rows, cols}, DType::kBF16, 11), x = randn({n, cols}, DType::kF32, 12);
      Tensor y = Tensor::empty({n, rows}, DType::kF32);
      matvec(w.view(), x.view(), y.view());
      std::vector<double> want(n * rows, 0.0), wv = test::values(w.view()),
                                               xv = test::values(x.view());
      for (int64_t t = 0; t < n; ++t)
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < cols; ++c)
            want[t * rows + r] += wv[r * cols + c] * xv[t * cols + c];
      EXPECT_LE(rel_rms(test::values(y.view()), want), 1e-6) << "matvec bf16, n " << n;
    }
  }
  EXPECT_TRUE(has_fallback) << "the portable fallback target is not compiled in";
}

TEST_F(ForcedTarget, UnknownTargetIsAnError) {
  EXPECT_THROW(force_simd_target(12345), Error);  // several bits: not a target
}

}  // namespace
}  // namespace subq
