// Rows of [B, T, heads, dim] tensors as f32 for the kernels: loading any input dtype, storing
// to any output dtype, and reading a block of rows in place when that is possible.
// Per-target include guard: this file is compiled once per Highway target.
#if defined(SUBQ_CPU_ROWS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SUBQ_CPU_ROWS_INL_H_
#undef SUBQ_CPU_ROWS_INL_H_
#else
#define SUBQ_CPU_ROWS_INL_H_
#endif

#include <cstdint>
#include <cstring>

#include "hwy/highway.h"
#include "src/flash_args.h"
#include "subq/dtype.h"
#include "subq/tensor.h"

HWY_BEFORE_NAMESPACE();
namespace subq::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

inline size_t RoundUp(size_t x, size_t m) {
  return (x + m - 1) / m * m;
}

// dst[0, n) = src[0, n) as f32, for src of dtype f32, bf16 or f16; dst[n, npad) = 0.
HWY_INLINE void LoadRowF32(const void* src, DType dt, size_t n, float* HWY_RESTRICT dst,
                           size_t npad) {
  const hn::ScalableTag<float> df;
  const size_t L = hn::Lanes(df);
  size_t i = 0;
  if (dt == DType::kF32) {
    std::memcpy(dst, src, n * sizeof(float));
    i = n;
  } else if (dt == DType::kBF16) {
    const hn::Rebind<hwy::bfloat16_t, decltype(df)> dbf;
    const auto* p = static_cast<const hwy::bfloat16_t*>(src);
    for (; i + L <= n; i += L) hn::StoreU(hn::PromoteTo(df, hn::LoadU(dbf, p + i)), df, dst + i);
    const auto* u = static_cast<const uint16_t*>(src);
    for (; i < n; ++i) dst[i] = bf16_to_f32(u[i]);
  } else {
    const hn::Rebind<hwy::float16_t, decltype(df)> dh;
    const auto* p = static_cast<const hwy::float16_t*>(src);
    for (; i + L <= n; i += L) hn::StoreU(hn::PromoteTo(df, hn::LoadU(dh, p + i)), df, dst + i);
    const auto* u = static_cast<const uint16_t*>(src);
    for (; i < n; ++i) dst[i] = f16_to_f32(u[i]);
  }
  for (; i < npad; ++i) dst[i] = 0.f;
}

// A block of rows of one head as f32 GEMM operand: a pointer and a row stride in floats.
struct F32Rows {
  const float* p;
  size_t ld;
};

// Rows [row0, row0 + n) of head h of batch entry b of a [B, T, heads, dim] view. Read in place
// when the view is f32 and, if `whole_vectors` (a B operand, read by full vectors), its row
// length is a multiple of the lane count; otherwise converted into `scratch` with rows padded
// with zeros to `ld_pad` floats.
HWY_INLINE F32Rows RowsAsF32(const TensorView& t, int64_t b, int64_t row0, int64_t n, int64_t h,
                             bool whole_vectors, float* scratch, size_t ld_pad) {
  const int64_t dim = t.size(3);
  const auto L = static_cast<int64_t>(hn::Lanes(hn::ScalableTag<float>()));
  if (t.dtype() == DType::kF32 && (!whole_vectors || dim % L == 0))
    return {reinterpret_cast<const float*>(detail::row_ptr(t, b, row0, h)),
            static_cast<size_t>(t.stride(1))};
  for (int64_t j = 0; j < n; ++j)
    LoadRowF32(detail::row_ptr(t, b, row0 + j, h), t.dtype(), dim, scratch + j * ld_pad, ld_pad);
  return {scratch, ld_pad};
}

// dst[0, n) = src[0, n) converted to dtype dt (f32, bf16 or f16), round to nearest even. Rows are
// written once per output row, so scalar conversion is cheap enough here.
HWY_INLINE void StoreRowF32(const float* HWY_RESTRICT src, size_t n, void* dst, DType dt) {
  if (dt == DType::kF32) {
    std::memcpy(dst, src, n * sizeof(float));
  } else if (dt == DType::kBF16) {
    auto* u = static_cast<uint16_t*>(dst);
    for (size_t i = 0; i < n; ++i) u[i] = f32_to_bf16(src[i]);
  } else {
    auto* u = static_cast<uint16_t*>(dst);
    for (size_t i = 0; i < n; ++i) u[i] = f32_to_f16(src[i]);
  }
}

}  // namespace subq::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
