// Tensors, views, dtype conversions, the seeded random fill, and their errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "subq/error.h"
#include "subq/random.h"
#include "subq/tensor.h"
#include "tests/test_util.h"

namespace subq {
namespace {

TEST(Tensor, AlignedContiguousAndShaped) {
  Tensor t = Tensor::empty({2, 3, 5}, DType::kF32);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % kTensorAlignment, 0u);
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{2, 3, 5}));
  EXPECT_EQ(t.view().strides(), (std::vector<int64_t>{15, 5, 1}));
  EXPECT_TRUE(t.view().is_contiguous());
  EXPECT_EQ(t.numel(), 30);
  EXPECT_EQ(t.nbytes(), 120u);
  EXPECT_EQ(t.size(-1), 5);
  EXPECT_EQ(t.view().describe(), "[2, 3, 5] f32");
}

TEST(Tensor, NarrowIsAViewWithTheSameStrides) {
  Tensor t = Tensor::zeros({4, 6}, DType::kF32);
  TensorView v = t.view().narrow(1, 2, 3);
  EXPECT_EQ(v.sizes(), (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(v.stride(0), 6);
  EXPECT_FALSE(v.is_contiguous());
  set_element(v, {1, 0}, 7.0);
  EXPECT_EQ(get_element(t, {1, 2}), 7.0);
  EXPECT_THROW(t.view().narrow(1, 4, 3), Error);
  EXPECT_THROW(t.view().size(2), Error);
}

TEST(Tensor, TransposedSwapsShapeAndStrides) {
  Tensor t = Tensor::empty({3, 5}, DType::kF32);
  const TensorView v = t.view().transposed();
  EXPECT_EQ(v.sizes(), (std::vector<int64_t>{5, 3}));
  EXPECT_EQ(v.strides(), (std::vector<int64_t>{1, 5}));
  EXPECT_EQ(v.data(), t.data());
  EXPECT_FALSE(v.is_contiguous());
  EXPECT_THROW(Tensor::empty({2, 3, 4}, DType::kF32).view().transposed(), Error);
}

TEST(Tensor, CopyConvertsAndFollowsStrides) {
  Tensor a = test::randn({3, 4}, DType::kF32, 1);
  // Transposed view: strides (1, 4).
  TensorView at(a.data(), DType::kF32, {4, 3}, {1, 4});
  Tensor b = Tensor::copy_of(at, DType::kF64);
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 3; ++j) EXPECT_EQ(get_element(b, {i, j}), get_element(a, {j, i}));
  Tensor c = Tensor::copy_of(a, DType::kBF16);
  EXPECT_EQ(get_element(c, {1, 1}),
            round_to(DType::kBF16, static_cast<float>(get_element(a, {1, 1}))));
}

TEST(Tensor, BadShapesAreErrors) {
  EXPECT_THROW(Tensor::empty({2, -1}, DType::kF32), Error);
  EXPECT_THROW(TensorView(nullptr, DType::kF32, {1, 2, 3, 4, 5, 6, 7}), Error);
  EXPECT_THROW(TensorView(nullptr, DType::kF32, {2, 2}, {1}), Error);
  Tensor t = Tensor::zeros({2, 2}, DType::kF32);
  EXPECT_THROW(get_element(t, {2, 0}), Error);
  EXPECT_THROW(copy_into(t, Tensor::zeros({2, 3}, DType::kF32)), Error);
}

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly halfway between bf16 neighbours 1 and 1 + 2^-7: ties to even (1).
  EXPECT_EQ(f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to even (1 + 2^-6).
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
  EXPECT_EQ(f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);  // just above halfway: up
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(-INFINITY)), -INFINITY);
  // Large finite values stay finite, within half a bf16 ulp (2^-9 relative).
  const float big = bf16_to_f32(f32_to_bf16(3.0e38f));
  EXPECT_TRUE(std::isfinite(big));
  EXPECT_LE(std::abs(big - 3.0e38f) / 3.0e38f, 0x1p-9f);
}

TEST(DType, F16AllValuesRoundTrip) {
  // Every finite half converts to f32 and back to itself; NaNs stay NaN.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    EXPECT_EQ(f32_to_f16(f), h) << std::hex << h;
  }
}

TEST(DType, F16RoundingAndRange) {
  EXPECT_EQ(f16_to_f32(f32_to_f16(65504.f)), 65504.f);
  EXPECT_EQ(f16_to_f32(f32_to_f16(65519.f)), 65504.f);
  EXPECT_EQ(f16_to_f32(f32_to_f16(65520.f)), INFINITY);
  EXPECT_EQ(f16_to_f32(f32_to_f16(0x1p-24f)), 0x1p-24f);      // smallest subnormal
  EXPECT_EQ(f16_to_f32(f32_to_f16(0x1p-26f)), 0.f);           // below half of it: zero
  EXPECT_EQ(f16_to_f32(f32_to_f16(3 * 0x1p-25f)), 0x1p-23f);  // tie between 1 and 2 ulps: even
  // Ties to even in the normal range: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10.
  EXPECT_EQ(f16_to_f32(f32_to_f16(1.f + 0x1p-11f)), 1.f);
  EXPECT_EQ(f16_to_f32(f32_to_f16(1.f + 3 * 0x1p-11f)), 1.f + 0x1p-9f);
}

TEST(DType, NamesRoundTripAndUnknownIsAnError) {
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16, DType::kF64, DType::kI32, DType::kI64})
    EXPECT_EQ(dtype_from_name(dtype_name(dt)), dt);
  EXPECT_THROW(dtype_from_name("fp8"), Error);
}

TEST(Random, SeededAndStrideIndependent) {
  Tensor a = Tensor::empty({64, 16}, DType::kF32), b = Tensor::empty({64, 16}, DType::kF32);
  fill_normal(a, 42);
  fill_normal(b, 42);
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0);
  fill_normal(b, 43);
  EXPECT_NE(std::memcmp(a.data(), b.data(), a.nbytes()), 0);
  // The same values land in a strided view as in a contiguous tensor.
  Tensor wide = Tensor::zeros({64, 32}, DType::kF32);
  fill_normal(wide.view().narrow(1, 8, 16), 42);
  for (int64_t i = 0; i < 64; i += 7)
    EXPECT_EQ(get_element(wide, {i, 8 + 3}), get_element(a, {i, 3}));
  // Moments of 1024 normal samples.
  const auto v = test::values(a);
  double mean = 0, var = 0;
  for (double x : v) mean += x / v.size();
  for (double x : v) var += (x - mean) * (x - mean) / v.size();
  EXPECT_NEAR(mean, 0.0, 0.1);
  EXPECT_NEAR(var, 1.0, 0.1);
}

TEST(Random, UniformRange) {
  Tensor t = Tensor::empty({1000}, DType::kF64);
  fill_uniform(t, 3, -2.0, 5.0);
  for (double x : test::values(t)) {
    EXPECT_GE(x, -2.0);
    EXPECT_LT(x, 5.0);
  }
  Tensor i = Tensor::empty({4}, DType::kI32);
  EXPECT_THROW(fill_normal(i, 1), Error);
}

}  // namespace
}  // namespace subq
