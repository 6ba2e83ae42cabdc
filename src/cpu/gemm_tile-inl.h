// Register-blocked fp32 GEMM tiles, the inner engine of every fast attention kernel.
//
//   C[M x N] (=, +=, or row-scaled +=) A[M x K] * B[K x N]
//
// A is read through two strides (a_rs between rows, a_cs between columns), one element at a
// time, and broadcast; B is read one vector (L floats) of a row at a time. So B's rows must be
// contiguous and N a multiple of L, while A can be any strided view: a row-major K tile, the
// transposed probability tile, ... This is why the attention kernels keep the score tile as
// S^T [keys x queries]: the softmax statistics become vertical (per-lane) operations and no
// operand has to be transposed inside the tile loop (docs/performance.md).
//
// Per-target include guard: this file is compiled once per Highway target.
#if defined(SUBQ_CPU_GEMM_TILE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SUBQ_CPU_GEMM_TILE_INL_H_
#undef SUBQ_CPU_GEMM_TILE_INL_H_
#else
#define SUBQ_CPU_GEMM_TILE_INL_H_
#endif

#include <cstddef>

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace subq::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// How the tile starts: C = AB, C += AB, or C = diag(row_scale) C + AB (the online-softmax
// rescale of the output accumulator, fused so the accumulator is read once per KV tile).
enum class TileInit { kOverwrite, kAccumulate, kRowScaled };

// Register blocking: kMR rows x kNV vectors of accumulators, plus kNV B vectors and one A
// broadcast in flight. AVX-512 has 32 vector registers: 8 x 2 = 16 accumulators keep both FMA
// pipes busy through the 4-cycle latency. The 16-register targets (AVX2, SSE4, NEON) take
// 6 x 2 = 12 accumulators + 2 + 1 = 15 registers.
#if HWY_TARGET <= HWY_AVX3 && HWY_ARCH_X86
inline constexpr size_t kMR = 8;
#else
inline constexpr size_t kMR = 6;
#endif
inline constexpr size_t kNV = 2;

template <size_t MR, size_t NV>
HWY_INLINE void MicroTile(size_t K, const float* HWY_RESTRICT a, size_t a_rs, size_t a_cs,
                          const float* HWY_RESTRICT b, size_t ldb, float* HWY_RESTRICT c,
                          size_t ldc, TileInit init, const float* HWY_RESTRICT row_scale) {
  const hn::ScalableTag<float> d;
  const size_t L = hn::Lanes(d);
  using V = hn::Vec<decltype(d)>;
  V acc[MR][NV];
  for (size_t r = 0; r < MR; ++r)
    for (size_t v = 0; v < NV; ++v) acc[r][v] = hn::Zero(d);

  for (size_t k = 0; k < K; ++k) {
    const float* HWY_RESTRICT bk = b + k * ldb;
    V bv[NV];
    for (size_t v = 0; v < NV; ++v) bv[v] = hn::LoadU(d, bk + v * L);
    const float* HWY_RESTRICT ak = a + k * a_cs;
    for (size_t r = 0; r < MR; ++r) {
      const V ar = hn::Set(d, ak[r * a_rs]);
      for (size_t v = 0; v < NV; ++v) acc[r][v] = hn::MulAdd(ar, bv[v], acc[r][v]);
    }
  }

  for (size_t r = 0; r < MR; ++r) {
    float* HWY_RESTRICT cr = c + r * ldc;
    for (size_t v = 0; v < NV; ++v) {
      V out = acc[r][v];
      if (init == TileInit::kAccumulate) {
        out = hn::Add(hn::LoadU(d, cr + v * L), out);
      } else if (init == TileInit::kRowScaled && row_scale) {
        out = hn::MulAdd(hn::Set(d, row_scale[r]), hn::LoadU(d, cr + v * L), out);
      }
      hn::StoreU(out, d, cr + v * L);
    }
  }
}

// Rows [0, mr) with mr <= kMR: dispatch to the instantiation for exactly mr rows.
template <size_t NV>
HWY_INLINE void MicroTileRows(size_t mr, size_t K, const float* a, size_t a_rs, size_t a_cs,
                              const float* b, size_t ldb, float* c, size_t ldc, TileInit init,
                              const float* row_scale) {
  switch (mr) {
#define SUBQ_ROWS_CASE(R)                                                                        \
  case R:                                                                                        \
    if constexpr (R <= kMR) MicroTile<R, NV>(K, a, a_rs, a_cs, b, ldb, c, ldc, init, row_scale); \
    break;
    SUBQ_ROWS_CASE(1)
    SUBQ_ROWS_CASE(2)
    SUBQ_ROWS_CASE(3)
    SUBQ_ROWS_CASE(4)
    SUBQ_ROWS_CASE(5)
    SUBQ_ROWS_CASE(6)
    SUBQ_ROWS_CASE(7)
    SUBQ_ROWS_CASE(8)
#undef SUBQ_ROWS_CASE
    default:
      break;
  }
}

// C[M x N] (init) A[M x K] B[K x N]; N must be a multiple of Lanes(float). row_scale (kRowScaled
// only) has M entries. Loops N outside M so a B panel (K x kNV*L floats) stays in L1 while all
// row blocks of A stream past it.
//
// Deliberately out of line: kernels call it 2-10 times per tile loop, and with every call
// inlined GCC 12 stopped keeping the accumulators in registers. Measured (docs/performance.md):
// the chunked linear backward went from 16 % to 32 % of peak, the flash backward from 38 % to
// about 50 %, by this one change.
inline HWY_NOINLINE void GemmTile(size_t M, size_t N, size_t K, const float* a, size_t a_rs,
                                  size_t a_cs, const float* b, size_t ldb, float* c, size_t ldc,
                                  TileInit init, const float* row_scale = nullptr) {
  const hn::ScalableTag<float> d;
  const size_t L = hn::Lanes(d);
  size_t n0 = 0;
  for (; n0 + kNV * L <= N; n0 += kNV * L) {
    for (size_t m0 = 0; m0 < M; m0 += kMR) {
      const size_t mr = M - m0 < kMR ? M - m0 : kMR;
      MicroTileRows<kNV>(mr, K, a + m0 * a_rs, a_rs, a_cs, b + n0, ldb, c + m0 * ldc + n0, ldc,
                         init, row_scale ? row_scale + m0 : nullptr);
    }
  }
  for (; n0 < N; n0 += L) {  // column tail, one vector at a time
    for (size_t m0 = 0; m0 < M; m0 += kMR) {
      const size_t mr = M - m0 < kMR ? M - m0 : kMR;
      MicroTileRows<1>(mr, K, a + m0 * a_rs, a_rs, a_cs, b + n0, ldb, c + m0 * ldc + n0, ldc, init,
                       row_scale ? row_scale + m0 : nullptr);
    }
  }
}

}  // namespace subq::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
