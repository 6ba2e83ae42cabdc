// Bad input to the exact-attention entry points raises subq::Error naming the argument, what
// was expected and what was given, before any memory is read.
#include <gtest/gtest.h>

#include <string>

#include "subq/error.h"
#include "subq/flash.h"
#include "tests/test_util.h"

namespace subq {
namespace {

using test::randn;

// Expects fn() to throw subq::Error whose message contains every one of `parts`.
template <class Fn>
void expect_error(Fn&& fn, std::initializer_list<const char*> parts) {
  try {
    fn();
    ADD_FAILURE() << "no subq::Error thrown";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "message: " << msg;
  }
}

struct Good {
  Tensor q = randn({2, 16, 4, 32}, DType::kF32, 1);
  Tensor k = randn({2, 20, 2, 32}, DType::kF32, 2);
  Tensor v = randn({2, 20, 2, 24}, DType::kF32, 3);
  Tensor out = Tensor::empty({2, 16, 4, 24}, DType::kF32);
  Tensor lse = Tensor::empty({2, 4, 16}, DType::kF32);
};

TEST(FlashErrors, HeadsNotDivisible) {
  Good g;
  Tensor k = randn({2, 20, 3, 32}, DType::kF32, 2), v = randn({2, 20, 3, 24}, DType::kF32, 3);
  expect_error([&] { flash_attention(g.q, k, v); }, {"k", "H % Hkv == 0", "got 3"});
}

TEST(FlashErrors, HeadDimMismatch) {
  Good g;
  Tensor k = randn({2, 20, 2, 16}, DType::kF32, 2);
  expect_error([&] { flash_attention(g.q, k, g.v); }, {"k", "head dim 32", "got 16"});
}

TEST(FlashErrors, MismatchedDtype) {
  Good g;
  Tensor k = randn({2, 20, 2, 32}, DType::kBF16, 2);
  expect_error([&] { flash_attention(g.q, k, g.v); }, {"k", "dtype f32", "got bf16"});
}

TEST(FlashErrors, IntegerOrF64Input) {
  Good g;
  Tensor qi = Tensor::zeros({2, 16, 4, 32}, DType::kI32);
  expect_error([&] { flash_attention(qi, g.k, g.v); }, {"q", "f32, bf16 or f16", "i32"});
  Tensor q64 = Tensor::copy_of(g.q, DType::kF64);
  expect_error([&] { flash_attention(q64, g.k, g.v); }, {"q", "f64 needs impl = ref"});
}

TEST(FlashErrors, ZeroSizeTensors) {
  Good g;
  Tensor q = Tensor::empty({0, 16, 4, 32}, DType::kF32);
  expect_error([&] { flash_attention(q, g.k, g.v); }, {"q", "non-empty", "[0, 16, 4, 32]"});
  Tensor k = Tensor::empty({2, 0, 2, 32}, DType::kF32),
         v = Tensor::empty({2, 0, 2, 24}, DType::kF32);
  expect_error([&] { flash_attention(g.q, k, v); }, {"k", "non-empty"});
}

TEST(FlashErrors, WrongRankAndMissing) {
  Good g;
  Tensor q3 = randn({16, 4, 32}, DType::kF32, 1);
  expect_error([&] { flash_attention(q3, g.k, g.v); }, {"q", "rank 4", "got 3"});
  expect_error([&] { flash_attention(g.q, TensorView(), g.v); }, {"k", "got none"});
}

TEST(FlashErrors, BatchAndLengthMismatch) {
  Good g;
  Tensor k = randn({3, 20, 2, 32}, DType::kF32, 2);
  expect_error([&] { flash_attention(g.q, k, g.v); }, {"k", "batch 2", "got 3"});
  Tensor v = randn({2, 21, 2, 24}, DType::kF32, 3);
  expect_error([&] { flash_attention(g.q, g.k, v); }, {"v", "sequence length 20", "got 21"});
}

TEST(FlashErrors, BadOutputs) {
  Good g;
  Tensor out = Tensor::empty({2, 16, 4, 32}, DType::kF32);
  expect_error([&] { flash_attention_forward(g.q, g.k, g.v, out, g.lse); },
               {"out", "shape [2, 16, 4, 24]", "[2, 16, 4, 32]"});
  Tensor lse = Tensor::empty({2, 4, 16}, DType::kBF16);
  expect_error([&] { flash_attention_forward(g.q, g.k, g.v, g.out, lse); },
               {"lse", "dtype f32", "bf16"});
}

TEST(FlashErrors, WindowAndSoftcapAndScale) {
  Good g;
  FlashOptions o;
  o.window_left = -2;
  expect_error([&] { flash_attention(g.q, g.k, g.v, o); }, {"window_size.left", ">= -1", "-2"});
  o = {};
  o.window_right = -5;
  expect_error([&] { flash_attention(g.q, g.k, g.v, o); }, {"window_size.right", "-5"});
  o = {};
  o.softcap = -1.f;
  expect_error([&] { flash_attention(g.q, g.k, g.v, o); }, {"softcap", ">= 0", "-1"});
  o = {};
  o.softcap = NAN;
  expect_error([&] { flash_attention(g.q, g.k, g.v, o); }, {"softcap"});
  o = {};
  o.softmax_scale = INFINITY;
  expect_error([&] { flash_attention(g.q, g.k, g.v, o); }, {"softmax_scale", "finite"});
}

TEST(FlashErrors, AlibiShapeAndDtype) {
  Good g;
  FlashOptions o;
  Tensor s = Tensor::zeros({3}, DType::kF32);
  o.alibi_slopes = s;
  expect_error([&] { flash_attention(g.q, g.k, g.v, o); },
               {"alibi_slopes", "[4] or [2, 4]", "[3]"});
  Tensor s16 = Tensor::zeros({4}, DType::kF16);
  o.alibi_slopes = s16;
  expect_error([&] { flash_attention(g.q, g.k, g.v, o); }, {"alibi_slopes", "dtype f32"});
}

struct Varlen {
  Tensor q = randn({1, 30, 2, 16}, DType::kF32, 1);
  Tensor k = randn({1, 30, 2, 16}, DType::kF32, 2);
  Tensor v = randn({1, 30, 2, 16}, DType::kF32, 3);
  static Tensor offsets(std::initializer_list<int> xs, DType dt = DType::kI32) {
    Tensor t = Tensor::empty({static_cast<int64_t>(xs.size())}, dt);
    int64_t i = 0;
    for (int x : xs) set_element(t, {i++}, x);
    return t;
  }
};

TEST(FlashErrors, CuSeqlens) {
  Varlen w;
  FlashOptions o;
  Tensor good = Varlen::offsets({0, 10, 30});
  Tensor decreasing = Varlen::offsets({0, 20, 10});
  o.cu_seqlens_q = decreasing;
  o.cu_seqlens_k = good;
  expect_error([&] { flash_attention(w.q, w.k, w.v, o); },
               {"cu_seqlens_q", "non-decreasing", "20 then 10"});
  Tensor overrun = Varlen::offsets({0, 10, 31});
  o.cu_seqlens_q = good;
  o.cu_seqlens_k = overrun;
  expect_error([&] { flash_attention(w.q, w.k, w.v, o); },
               {"cu_seqlens_k", "within the 30 packed rows", "31"});
  Tensor nonzero = Varlen::offsets({2, 10, 30});
  o.cu_seqlens_k = nonzero;
  expect_error([&] { flash_attention(w.q, w.k, w.v, o); }, {"cu_seqlens_k", "starting at 0"});
  Tensor floats = Varlen::offsets({0, 10, 30}, DType::kF32);
  o.cu_seqlens_k = floats;
  expect_error([&] { flash_attention(w.q, w.k, w.v, o); }, {"cu_seqlens_k", "i32 or i64"});
  Tensor longer = Varlen::offsets({0, 10, 20, 30});
  o.cu_seqlens_k = longer;
  expect_error([&] { flash_attention(w.q, w.k, w.v, o); }, {"cu_seqlens_k", "3 offsets"});
  o.cu_seqlens_k = TensorView();
  expect_error([&] { flash_attention(w.q, w.k, w.v, o); }, {"both cu_seqlens_q and cu_seqlens_k"});
  // Packed input must have batch 1.
  Tensor q2 = randn({2, 30, 2, 16}, DType::kF32, 1), k2 = randn({2, 30, 2, 16}, DType::kF32, 2);
  o.cu_seqlens_k = good;
  expect_error([&] { flash_attention(q2, k2, k2, o); }, {"q", "batch 1 with cu_seqlens"});
}

TEST(FlashErrors, BackwardShapes) {
  Good g;
  FlashOutput f = flash_attention(g.q, g.k, g.v);
  Tensor dout = randn({2, 16, 4, 24}, DType::kF32, 4);
  Tensor dq = Tensor::empty({2, 16, 4, 32}, DType::kF32),
         dk = Tensor::empty({2, 20, 2, 32}, DType::kF32);
  Tensor bad_dv = Tensor::empty({2, 20, 2, 32}, DType::kF32);
  expect_error([&] { flash_attention_backward(g.q, g.k, g.v, f.out, f.lse, dout, dq, dk, bad_dv); },
               {"dv", "[2, 20, 2, 24]"});
  Tensor bad_dout = randn({2, 16, 4, 32}, DType::kF32, 4);
  expect_error([&] { flash_attention_grad(g.q, g.k, g.v, f.out, f.lse, bad_dout); }, {"dout"});
}

struct DecodeSetup {
  Tensor q = randn({2, 1, 4, 16}, DType::kF32, 1);
  Tensor kc = randn({2, 32, 2, 16}, DType::kF32, 2);
  Tensor vc = randn({2, 32, 2, 16}, DType::kF32, 3);
  Tensor kn = randn({2, 1, 2, 16}, DType::kF32, 4);
  Tensor vn = randn({2, 1, 2, 16}, DType::kF32, 5);
  Tensor lens = Varlen::offsets({5, 31});
  Tensor out = Tensor::empty({2, 1, 4, 16}, DType::kF32);
  Tensor lse = Tensor::empty({2, 4, 1}, DType::kF32);
};

TEST(FlashErrors, Decode) {
  DecodeSetup d;
  FlashDecodeOptions o;
  Tensor full = Varlen::offsets({5, 32});
  expect_error([&] { flash_attention_decode(d.q, d.kc, d.vc, full, d.kn, d.vn, d.out, d.lse, o); },
               {"cache_seqlens", "room for 1 new tokens in capacity 32", "32 at batch 1"});
  Tensor negative = Varlen::offsets({-1, 3});
  expect_error(
      [&] { flash_attention_decode(d.q, d.kc, d.vc, negative, d.kn, d.vn, d.out, d.lse, o); },
      {"cache_seqlens", ">= 0"});
  Tensor empty = Varlen::offsets({0, 3});
  expect_error([&] { flash_attention_decode(d.q, d.kc, d.vc, empty, {}, {}, d.out, d.lse, o); },
               {"cache_seqlens", "at least Tn = 1"});
  expect_error([&] { flash_attention_decode(d.q, d.kc, d.vc, d.lens, d.kn, {}, d.out, d.lse, o); },
               {"v_new", "both k_new and v_new"});
  o.ring_buffer = true;
  expect_error(
      [&] { flash_attention_decode(d.q, d.kc, d.vc, d.lens, d.kn, d.vn, d.out, d.lse, o); },
      {"window_size.left", "bounded left window"});
  o.window_left = 32;
  expect_error(
      [&] { flash_attention_decode(d.q, d.kc, d.vc, d.lens, d.kn, d.vn, d.out, d.lse, o); },
      {"window_size.left", "left + Tn <= cache capacity 32"});
  o = {};
  o.num_splits = -1;
  expect_error(
      [&] { flash_attention_decode(d.q, d.kc, d.vc, d.lens, d.kn, d.vn, d.out, d.lse, o); },
      {"num_splits"});
  Tensor kc_bf = randn({2, 32, 2, 16}, DType::kBF16, 2);
  expect_error(
      [&] { flash_attention_decode(d.q, kc_bf, d.vc, d.lens, d.kn, d.vn, d.out, d.lse, {}); },
      {"k_cache", "dtype f32"});
}

TEST(FlashErrors, NothingWrittenOnError) {
  // Validation happens before any memory is touched: the cache is unchanged after a failed
  // append.
  DecodeSetup d;
  Tensor before = Tensor::copy_of(d.kc);
  Tensor bad_out = Tensor::empty({2, 1, 4, 15}, DType::kF32);
  EXPECT_THROW(flash_attention_decode(d.q, d.kc, d.vc, d.lens, d.kn, d.vn, bad_out, d.lse, {}),
               Error);
  EXPECT_EQ(test::max_abs_diff(test::values(before), test::values(d.kc)), 0.0);
}

}  // namespace
}  // namespace subq
