// matvec (subq/matvec.h): per output row, the dot products of one weight row with the n input
// rows, four vector accumulators each. Memory-bound: the weight row is streamed once.
#include "subq/matvec.h"

#include <algorithm>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/cpu/matvec.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/highway.h"
#include "src/cpu/prefetch-inl.h"
#include "subq/error.h"
#include "subq/threads.h"

HWY_BEFORE_NAMESPACE();
namespace subq::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The weights of lanes [c, c + Lanes) of a row, as f32 (bf16 is the top half of an f32: widen
// and shift).
template <class D, class WT>
HWY_INLINE hn::Vec<D> LoadWeights(D df, const WT* HWY_RESTRICT row, int64_t c) {
  if constexpr (sizeof(WT) == 2) {
    const hn::RebindToUnsigned<D> du32;
    const hn::Rebind<uint16_t, D> du16;
    return hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(du32, hn::LoadU(du16, row + c))));
  } else {
    return hn::LoadU(df, row + c);
  }
}

template <class WT>
HWY_INLINE float WeightF32(WT v) {
  if constexpr (sizeof(WT) == 2) {
    return bf16_to_f32(v);
  } else {
    return v;
  }
}

// R rows of W against N rows of x: R·N accumulators, known at compile time so that they stay
// in registers, and R·N independent FMA chains (N >= 2 rows of x; one row takes MatvecRowOne).
template <int R, int N, class WT>
HWY_INLINE void MatvecTile(const WT* HWY_RESTRICT w, const float* HWY_RESTRICT x,
                           float* HWY_RESTRICT y, int64_t rows, int64_t cols, int64_t r) {
  const hn::ScalableTag<float> df;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  hn::Vec<decltype(df)> acc[R * N];
  for (int k = 0; k < R * N; ++k) acc[k] = hn::Zero(df);
  int64_t c = 0;
  for (; c + L <= cols; c += L) {
    for (int j = 0; j < R; ++j) {
      const auto wv = LoadWeights(df, w + (r + j) * cols, c);
      for (int t = 0; t < N; ++t)
        acc[j * N + t] = hn::MulAdd(wv, hn::LoadU(df, x + t * cols + c), acc[j * N + t]);
    }
  }
  for (int j = 0; j < R; ++j) {
    const WT* row = w + (r + j) * cols;
    for (int t = 0; t < N; ++t) {
      float sum = hn::GetLane(hn::SumOfLanes(df, acc[j * N + t]));
      for (int64_t cc = c; cc < cols; ++cc) sum += WeightF32(row[cc]) * x[t * cols + cc];
      y[t * rows + r + j] = sum;
    }
  }
}

// One row of W against one row of x (a decode step), read front to back with four accumulators
// for the FMA latency: the weights stream strictly in order. (Four rows interleaved measured
// the same in the model; the sequential form is the simpler one.)
template <class WT>
HWY_INLINE void MatvecRowOne(const WT* HWY_RESTRICT row, const float* HWY_RESTRICT x,
                             float* HWY_RESTRICT y, int64_t cols) {
  const hn::ScalableTag<float> df;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  auto a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
  int64_t c = 0;
  for (; c + 4 * L <= cols; c += 4 * L) {
    PrefetchAhead(row + c, 4 * L * static_cast<int64_t>(sizeof(WT)));
    a0 = hn::MulAdd(LoadWeights(df, row, c), hn::LoadU(df, x + c), a0);
    a1 = hn::MulAdd(LoadWeights(df, row, c + L), hn::LoadU(df, x + c + L), a1);
    a2 = hn::MulAdd(LoadWeights(df, row, c + 2 * L), hn::LoadU(df, x + c + 2 * L), a2);
    a3 = hn::MulAdd(LoadWeights(df, row, c + 3 * L), hn::LoadU(df, x + c + 3 * L), a3);
  }
  for (; c + L <= cols; c += L) a0 = hn::MulAdd(LoadWeights(df, row, c), hn::LoadU(df, x + c), a0);
  float sum = hn::GetLane(hn::SumOfLanes(df, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
  for (; c < cols; ++c) sum += WeightF32(row[c]) * x[c];
  *y = sum;
}

// x [cols] in the order MatvecRowOneBF16 reads it: each block of 2 vectors (2L floats) as its
// even elements then its odd ones; a tail of fewer than 2L floats as it is.
void DeinterleaveX(const float* HWY_RESTRICT x, float* HWY_RESTRICT xp, int64_t cols) {
  const int64_t L = static_cast<int64_t>(hn::Lanes(hn::ScalableTag<float>()));
  int64_t c = 0;
  for (; c + 2 * L <= cols; c += 2 * L)
    for (int64_t j = 0; j < L; ++j) {
      xp[c + j] = x[c + 2 * j];
      xp[c + L + j] = x[c + 2 * j + 1];
    }
  for (; c < cols; ++c) xp[c] = x[c];
}

// One bf16 row against one row of x, without widening: 2L bf16 weights load as L 32-bit lanes;
// shifted left 16 bits, each lane is its even weight as an f32, masked to its top half its odd
// one. So the weights cost a shift and an AND per 2L instead of two widening shuffles and two
// shifts, and the shuffle port is left to the FMAs. x comes deinterleaved to match
// (DeinterleaveX). Measured on a 113 MB matrix, 2 threads, no prefetch: 16.8-18.5 GB/s
// widening, 19.5-20.3 GB/s this way.
HWY_INLINE void MatvecRowOneBF16(const uint16_t* HWY_RESTRICT row, const float* HWY_RESTRICT xp,
                                 float* HWY_RESTRICT y, int64_t cols) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  const auto hi = hn::Set(du, 0xFFFF0000u);
  auto a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
  int64_t c = 0;
  for (; c + 4 * L <= cols; c += 4 * L) {
    PrefetchAhead(row + c, 4 * L * 2);
    const auto w0 = hn::LoadU(du, reinterpret_cast<const uint32_t*>(row + c));
    const auto w1 = hn::LoadU(du, reinterpret_cast<const uint32_t*>(row + c + 2 * L));
    a0 = hn::MulAdd(hn::BitCast(df, hn::ShiftLeft<16>(w0)), hn::LoadU(df, xp + c), a0);
    a1 = hn::MulAdd(hn::BitCast(df, hn::And(w0, hi)), hn::LoadU(df, xp + c + L), a1);
    a2 = hn::MulAdd(hn::BitCast(df, hn::ShiftLeft<16>(w1)), hn::LoadU(df, xp + c + 2 * L), a2);
    a3 = hn::MulAdd(hn::BitCast(df, hn::And(w1, hi)), hn::LoadU(df, xp + c + 3 * L), a3);
  }
  for (; c + 2 * L <= cols; c += 2 * L) {
    const auto w0 = hn::LoadU(du, reinterpret_cast<const uint32_t*>(row + c));
    a0 = hn::MulAdd(hn::BitCast(df, hn::ShiftLeft<16>(w0)), hn::LoadU(df, xp + c), a0);
    a1 = hn::MulAdd(hn::BitCast(df, hn::And(w0, hi)), hn::LoadU(df, xp + c + L), a1);
  }
  float sum = hn::GetLane(hn::SumOfLanes(df, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
  for (; c < cols; ++c) sum += bf16_to_f32(row[c]) * xp[c];
  *y = sum;
}

// Rows [r0, r1) of y[t, r] = sum_c w[r, c] x[t, c], for w of f32 or bf16 (as uint16 bits).
// With bf16 w and one row of x, x comes deinterleaved (DeinterleaveX, once per matvec call).
template <int N, class WT>
void MatvecRowsN(const WT* w, const float* x, float* y, int64_t rows, int64_t cols, int64_t r0,
                 int64_t r1) {
  if constexpr (N == 1 && sizeof(WT) == 2) {
    for (int64_t r = r0; r < r1; ++r) MatvecRowOneBF16(w + r * cols, x, y + r, cols);
  } else if constexpr (N == 1) {
    for (int64_t r = r0; r < r1; ++r) MatvecRowOne(w + r * cols, x, y + r, cols);
  } else {
    constexpr int R = N == 2 ? 2 : 1;
    int64_t r = r0;
    for (; r + R <= r1; r += R) MatvecTile<R, N>(w, x, y, rows, cols, r);
    for (; r < r1; ++r) MatvecTile<1, N>(w, x, y, rows, cols, r);
  }
}

template <class WT>
void MatvecRows(const WT* w, const float* x, float* y, int64_t rows, int64_t cols, int64_t n,
                int64_t r0, int64_t r1) {
  switch (n) {
    case 1:
      return MatvecRowsN<1>(w, x, y, rows, cols, r0, r1);
    case 2:
      return MatvecRowsN<2>(w, x, y, rows, cols, r0, r1);
    case 3:
      return MatvecRowsN<3>(w, x, y, rows, cols, r0, r1);
    case 4:
      return MatvecRowsN<4>(w, x, y, rows, cols, r0, r1);
    case 5:
      return MatvecRowsN<5>(w, x, y, rows, cols, r0, r1);
    case 6:
      return MatvecRowsN<6>(w, x, y, rows, cols, r0, r1);
    case 7:
      return MatvecRowsN<7>(w, x, y, rows, cols, r0, r1);
    default:
      return MatvecRowsN<8>(w, x, y, rows, cols, r0, r1);
  }
}

void MatvecF32(const float* w, const float* x, float* y, int64_t rows, int64_t cols, int64_t n,
               int64_t r0, int64_t r1) {
  MatvecRows(w, x, y, rows, cols, n, r0, r1);
}
void MatvecBF16(const uint16_t* w, const float* x, float* y, int64_t rows, int64_t cols, int64_t n,
                int64_t r0, int64_t r1) {
  MatvecRows(w, x, y, rows, cols, n, r0, r1);
}

}  // namespace subq::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace subq {
namespace cpu {
HWY_EXPORT(MatvecF32);
HWY_EXPORT(MatvecBF16);
HWY_EXPORT(DeinterleaveX);
}  // namespace cpu

void matvec(const TensorView& w, const TensorView& x, const TensorView& y) {
  SUBQ_CHECK_ARG(w.defined() && w.rank() == 2 && w.is_contiguous() &&
                     (w.dtype() == DType::kF32 || w.dtype() == DType::kBF16),
                 "matvec", "w", "a contiguous [rows, cols] f32 or bf16 tensor",
                 w.defined() ? w.describe() : "undefined");
  const int64_t rows = w.size(0), cols = w.size(1);
  SUBQ_CHECK_ARG(x.defined() && x.rank() == 2 && x.is_contiguous() && x.dtype() == DType::kF32 &&
                     x.size(1) == cols && x.size(0) >= 1 && x.size(0) <= kMatvecMaxRows,
                 "matvec", "x",
                 detail::concat("a contiguous [n <= ", kMatvecMaxRows, ", ", cols, "] f32 tensor"),
                 x.defined() ? x.describe() : "undefined");
  const int64_t n = x.size(0);
  SUBQ_CHECK_ARG(y.defined() && y.rank() == 2 && y.is_contiguous() && y.dtype() == DType::kF32 &&
                     y.size(0) == n && y.size(1) == rows,
                 "matvec", "y", detail::concat("a contiguous [", n, ", ", rows, "] f32 tensor"),
                 y.defined() ? y.describe() : "undefined");
  // Blocks of 64 rows (at least 32 KB of bf16 weights each): enough to amortise the dispatch,
  // and many more blocks than threads, for balance.
  constexpr int64_t kBlock = 64;
  const int64_t blocks = (rows + kBlock - 1) / kBlock;
  const float* xp = x.data_as<const float>();
  float* yp = y.data_as<float>();
  if (w.dtype() == DType::kBF16 && n == 1) {  // the order MatvecRowOneBF16 reads x in
    thread_local std::vector<float> xd;
    xd.resize(static_cast<size_t>(cols));
    HWY_DYNAMIC_DISPATCH(cpu::DeinterleaveX)(xp, xd.data(), cols);
    xp = xd.data();
  }
  parallel_for(blocks, [&](int64_t b, int) {
    const int64_t r0 = b * kBlock, r1 = std::min(rows, r0 + kBlock);
    if (w.dtype() == DType::kBF16) {
      HWY_DYNAMIC_DISPATCH(cpu::MatvecBF16)
      (w.data_as<const uint16_t>(), xp, yp, rows, cols, n, r0, r1);
    } else {
      HWY_DYNAMIC_DISPATCH(cpu::MatvecF32)(w.data_as<const float>(), xp, yp, rows, cols, n, r0, r1);
    }
  });
}

}  // namespace subq
#endif
