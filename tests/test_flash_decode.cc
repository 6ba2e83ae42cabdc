// Decode against a KV cache: against a full forward over the whole sequence, with and without
// a ring buffer, over split counts and thread counts, and against the float64 reference.
#include <gtest/gtest.h>

#include "subq/flash.h"
#include "subq/threads.h"
#include "tests/test_util.h"

namespace subq {
namespace {

using test::randn;
using test::rel_rms;

// A whole sequence q, k, v [B, T, H|Hkv, D]; decode feeds it token by token (or Tn at a time)
// into a cache and compares each step with the matching rows of one full forward.
struct Sequence {
  int64_t B, T, H, Hkv, D;
  Tensor q, k, v;
  Sequence(int64_t B_, int64_t T_, int64_t H_, int64_t Hkv_, int64_t D_, DType dt, uint64_t seed)
      : B(B_),
        T(T_),
        H(H_),
        Hkv(Hkv_),
        D(D_),
        q(randn({B_, T_, H_, D_}, dt, seed)),
        k(randn({B_, T_, Hkv_, D_}, dt, seed + 1)),
        v(randn({B_, T_, Hkv_, D_}, dt, seed + 2)) {}
};

// Runs prefill of `prompt` tokens through the cache, then decodes the rest `step` tokens at a
// time; returns the worst relative error of out and lse against the full forward.
double decode_against_forward(const Sequence& s, int64_t capacity, int64_t prompt, int64_t step,
                              FlashDecodeOptions opt) {
  FlashOptions fopt = opt;
  fopt.causal = true;
  FlashOutput full = flash_attention(s.q, s.k, s.v, fopt);
  opt.causal = true;
  Tensor kc = Tensor::zeros({s.B, capacity, s.Hkv, s.D}, s.q.dtype());
  Tensor vc = Tensor::zeros({s.B, capacity, s.Hkv, s.D}, s.q.dtype());
  Tensor lens = Tensor::zeros({s.B}, DType::kI32);
  double worst = 0;
  for (int64_t t0 = 0; t0 < s.T;) {
    const int64_t n = std::min(t0 == 0 ? prompt : step, s.T - t0);
    TensorView qn = s.q.view().narrow(1, t0, n), kn = s.k.view().narrow(1, t0, n),
               vn = s.v.view().narrow(1, t0, n);
    Tensor out = Tensor::empty({s.B, n, s.H, s.D}, s.q.dtype());
    Tensor lse = Tensor::empty({s.B, s.H, n}, DType::kF32);
    flash_attention_decode(qn, kc, vc, lens, kn, vn, out, lse, opt);
    worst = std::max(worst, rel_rms(out, full.out.view().narrow(1, t0, n)));
    worst = std::max(worst, rel_rms(lse, full.lse.view().narrow(2, t0, n)));
    for (int64_t b = 0; b < s.B; ++b) set_element(lens, {b}, get_element(lens, {b}) + n);
    t0 += n;
  }
  return worst;
}

TEST(FlashDecode, TokenByTokenMatchesFullForward) {
  Sequence s(2, 150, 4, 2, 64, DType::kF32, 1);
  EXPECT_LE(decode_against_forward(s, 160, 1, 1, {}), 1e-5);
}

TEST(FlashDecode, PrefillThenSeveralTokensPerStep) {
  Sequence s(1, 200, 6, 1, 48, DType::kF32, 2);  // MQA
  EXPECT_LE(decode_against_forward(s, 200, 70, 3, {}), 1e-5);
}

TEST(FlashDecode, LongCacheSplitAcrossThreads) {
  // Long enough for several splits; every split count gives the same answer.
  Sequence s(1, 3000, 2, 2, 32, DType::kF32, 3);
  for (int splits : {0, 1, 2, 7}) {
    FlashDecodeOptions opt;
    opt.num_splits = splits;
    EXPECT_LE(decode_against_forward(s, 3000, 2990, 1, opt), 1e-5) << splits << " splits";
  }
}

TEST(FlashDecode, RingBufferForSlidingWindow) {
  // Window of 32 keys including self; the ring holds 40, so it wraps many times.
  Sequence s(2, 300, 4, 2, 64, DType::kF32, 4);
  FlashDecodeOptions opt;
  opt.window_left = 31;
  opt.window_right = 0;
  opt.ring_buffer = true;
  EXPECT_LE(decode_against_forward(s, 40, 1, 1, opt), 1e-5);
  EXPECT_LE(decode_against_forward(s, 40, 5, 5, opt), 1e-5);  // left + Tn = 36 <= 40
}

TEST(FlashDecode, SoftcapAndAlibi) {
  Sequence s(2, 120, 4, 4, 32, DType::kF32, 5);
  Tensor slopes = randn({2, 4}, DType::kF32, 6, 0.2);
  FlashDecodeOptions opt;
  opt.softcap = 3.f;
  opt.alibi_slopes = slopes;
  EXPECT_LE(decode_against_forward(s, 128, 10, 1, opt), 1e-5);
}

TEST(FlashDecode, Bf16Cache) {
  Sequence s(1, 100, 4, 2, 64, DType::kBF16, 7);
  // The forward and the decode both read bf16 inputs and round outputs to bf16.
  EXPECT_LE(decode_against_forward(s, 100, 1, 1, {}), 5e-3);
}

TEST(FlashDecode, MatchesReferenceAndAppendsInPlace) {
  const int64_t B = 3, C = 50, H = 4, Hkv = 2, D = 40, Tn = 2;
  Tensor q = randn({B, Tn, H, D}, DType::kF32, 1);
  Tensor kc = randn({B, C, Hkv, D}, DType::kF32, 2), vc = randn({B, C, Hkv, D}, DType::kF32, 3);
  Tensor kn = randn({B, Tn, Hkv, D}, DType::kF32, 4), vn = randn({B, Tn, Hkv, D}, DType::kF32, 5);
  Tensor lens = Tensor::empty({B}, DType::kI64);
  set_element(lens, {0}, 0);
  set_element(lens, {1}, 17);
  set_element(lens, {2}, 48);
  Tensor kc_ref = Tensor::copy_of(kc), vc_ref = Tensor::copy_of(vc);
  Tensor out = Tensor::empty({B, Tn, H, D}, DType::kF32),
         lse = Tensor::empty({B, H, Tn}, DType::kF32);
  Tensor rout = Tensor::empty({B, Tn, H, D}, DType::kF32),
         rlse = Tensor::empty({B, H, Tn}, DType::kF32);
  FlashDecodeOptions opt;
  opt.causal = true;
  flash_attention_decode(q, kc, vc, lens, kn, vn, out, lse, opt);
  opt.impl = Impl::kRef;
  flash_attention_decode(q, kc_ref, vc_ref, lens, kn, vn, rout, rlse, opt);
  EXPECT_LE(rel_rms(out, rout), 1e-5);
  EXPECT_LE(rel_rms(lse, rlse), 1e-5);
  // The new keys landed at cache_seqlens[b] .. + Tn; cache_seqlens itself is unchanged.
  EXPECT_EQ(get_element(kc, {1, 17, 1, 5}), get_element(kn, {1, 0, 1, 5}));
  EXPECT_EQ(get_element(vc, {2, 49, 0, 3}), get_element(vn, {2, 1, 0, 3}));
  EXPECT_EQ(get_element(lens, {1}), 17);
}

TEST(FlashDecode, ThreadCountsAgree) {
  Sequence s(1, 2000, 4, 2, 64, DType::kF32, 8);
  FlashDecodeOptions opt;
  opt.num_splits = 4;  // fixed splits: the merge order is fixed too, so results are identical
  const int saved = num_threads();
  Tensor outs[2];
  for (int t : {1, 2}) {
    set_num_threads(t);
    Tensor kc = Tensor::copy_of(s.k), vc = Tensor::copy_of(s.v);
    Tensor lens = Tensor::empty({1}, DType::kI32);
    set_element(lens, {0}, 2000);
    Tensor q = Tensor::copy_of(s.q.view().narrow(1, 1999, 1));
    outs[t - 1] = Tensor::empty({1, 1, 4, 64}, DType::kF32);
    Tensor lse = Tensor::empty({1, 4, 1}, DType::kF32);
    flash_attention_decode(q, kc, vc, lens, {}, {}, outs[t - 1], lse, opt);
  }
  set_num_threads(saved);
  EXPECT_EQ(test::max_abs_diff(test::values(outs[0]), test::values(outs[1])), 0.0);
}

}  // namespace
}  // namespace subq
