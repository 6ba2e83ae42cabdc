// Tile-level pieces shared by the attention kernels: block sizes and the score-tile epilogue
// (softcap, ALiBi, mask).
//
// Score tiles are kept transposed, S^T [keys x queries], with the queries along the vector
// lanes (see gemm_tile-inl.h for why). Everything here is per-target (Highway).
#if defined(SUBQ_CPU_ATTN_TILE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SUBQ_CPU_ATTN_TILE_INL_H_
#undef SUBQ_CPU_ATTN_TILE_INL_H_
#else
#define SUBQ_CPU_ATTN_TILE_INL_H_
#endif

#include <cstdint>
#include <cstring>
#include <limits>

#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "src/cpu/gemm_tile-inl.h"
#include "src/cpu/rows-inl.h"
#include "subq/dtype.h"

HWY_BEFORE_NAMESPACE();
namespace subq::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Tile sizes. A block of queries is the N dimension of S^T = K Q^T (so a multiple of the GEMM
// tile's kNV vectors: 16 floats on AVX2, 32 on AVX-512) and the M dimension of O = P V (so a
// multiple of kMR rows keeps the register tile full: 6 on AVX2, 8 on AVX-512); likewise for keys.
// 96 is both on every target. Measured on AVX2 (docs/performance.md): 96 beat 48 and 72 by
// 10-20% on the causal forward (per-tile overhead: packing, softmax passes, GEMM prologues) and
// tied with 144; 192 was slower.
inline constexpr size_t kBlockQ = 96;
inline constexpr size_t kBlockK = 96;

// The geometry of one score tile S^T[j][i]: keys k0 + j (j < nk) against queries q0 + i
// (i < nq), of a sequence with Tq queries and Tk keys. off = Tk - Tq aligns the window
// bottom-right.
struct ScoreTile {
  int64_t q0, nq, k0, nk, off, left, right;
  // True when every (query, key) pair of the tile is visible, so no mask is needed.
  bool fully_visible() const {
    const bool left_ok = left < 0 || k0 >= (q0 + nq - 1) + off - left;
    const bool right_ok = right < 0 || k0 + nk - 1 <= q0 + off + right;
    return left_ok && right_ok;
  }
};

// Applies softcap, ALiBi and the mask to S^T (nk rows, ncols columns with stride lds, ncols a
// multiple of the lane count). Masked entries become -inf. Columns >= nq are padding and are
// left as they are. With softcap and `cap_grad` given, cap_grad (same layout) receives the
// softcap's derivative 1 - tanh^2(s / c), which the backward needs and cannot recover from the
// biased score.
HWY_INLINE void ScoreEpilogue(float* HWY_RESTRICT st, size_t lds, size_t ncols, const ScoreTile& t,
                              float softcap, float slope, float* HWY_RESTRICT cap_grad = nullptr) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const size_t L = hn::Lanes(df);
  const bool mask = !t.fully_visible();
  const auto neg_inf = hn::Set(df, -std::numeric_limits<float>::infinity());
  if (softcap > 0) {
    const auto c = hn::Set(df, softcap), inv_c = hn::Set(df, 1.0f / softcap);
    const auto one = hn::Set(df, 1.f);
    for (int64_t j = 0; j < t.nk; ++j)
      for (size_t i = 0; i < ncols; i += L) {
        float* p = st + j * lds + i;
        const auto th = hn::Tanh(df, hn::Mul(hn::LoadU(df, p), inv_c));
        hn::StoreU(hn::Mul(c, th), df, p);
        if (cap_grad) hn::StoreU(hn::NegMulAdd(th, th, one), df, cap_grad + j * lds + i);
      }
  }
  if (slope != 0.f) {
    // bias = -slope * |(q0 + i) + off - (k0 + j)|, exact in f32 below 2^24 positions.
    const auto neg_slope = hn::Set(df, -slope);
    for (int64_t j = 0; j < t.nk; ++j) {
      const float base = static_cast<float>(t.q0 + t.off - (t.k0 + j));
      for (size_t i = 0; i < ncols; i += L) {
        float* p = st + j * lds + i;
        const auto dist = hn::Abs(hn::Add(hn::Iota(df, static_cast<float>(i)), hn::Set(df, base)));
        hn::StoreU(hn::MulAdd(neg_slope, dist, hn::LoadU(df, p)), df, p);
      }
    }
  }
  if (!mask) return;
  // Query q0 + i sees key k0 + j iff i in [k0 + j - off - right - q0, k0 + j - off + left - q0].
  const int64_t kBig = int64_t{1} << 30;
  for (int64_t j = 0; j < t.nk; ++j) {
    const int64_t key = t.k0 + j;
    const int64_t lo = t.right >= 0 ? key - t.off - t.right - t.q0 : -kBig;
    const int64_t hi = t.left >= 0 ? key - t.off + t.left - t.q0 : kBig;
    // Strict comparisons against lo - 1 and hi + 1: integer >= and <= are not on every target.
    const auto vlo = hn::Set(di, static_cast<int32_t>(std::max(lo, -kBig) - 1));
    const auto vhi = hn::Set(di, static_cast<int32_t>(std::min(hi, kBig) + 1));
    for (size_t i = 0; i < ncols; i += L) {
      float* p = st + j * lds + i;
      const auto idx = hn::Iota(di, static_cast<int32_t>(i));
      const auto visible = hn::And(hn::Gt(idx, vlo), hn::Lt(idx, vhi));
      hn::StoreU(hn::IfThenElse(hn::RebindMask(df, visible), hn::LoadU(df, p), neg_inf), df, p);
    }
  }
}

}  // namespace subq::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
