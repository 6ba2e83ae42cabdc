// Pieces shared by the linear-attention kernels: states in and out of scratch, gate decays of
// one token, and row-vector helpers. Per-target include guard: compiled once per Highway target.
#if defined(SUBQ_CPU_LINEAR_TILE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SUBQ_CPU_LINEAR_TILE_INL_H_
#undef SUBQ_CPU_LINEAR_TILE_INL_H_
#else
#define SUBQ_CPU_LINEAR_TILE_INL_H_
#endif

#include <cmath>
#include <cstdint>

#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "src/cpu/linear_cpu.h"
#include "src/cpu/rows-inl.h"

HWY_BEFORE_NAMESPACE();
namespace subq::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// S [K x VP] (rows padded with zeros) = state (n, h) of an f32 [N, H, K, Vc] buffer, or zeros.
HWY_INLINE void LoadState(const float* states, const detail::LinearArgs& a, size_t n, int64_t h,
                          int64_t K, int64_t Vc, size_t VP, float* HWY_RESTRICT S) {
  const float* src = states ? states + (static_cast<int64_t>(n) * a.H + h) * K * Vc : nullptr;
  for (int64_t i = 0; i < K; ++i) {
    float* row = S + i * VP;
    for (int64_t j = 0; j < Vc; ++j) row[j] = src ? src[i * Vc + j] : 0.f;
    for (size_t j = Vc; j < VP; ++j) row[j] = 0.f;
  }
}

HWY_INLINE void StoreState(float* states, const detail::LinearArgs& a, size_t n, int64_t h,
                           int64_t K, int64_t Vc, size_t VP, const float* HWY_RESTRICT S) {
  if (!states) return;
  float* dst = states + (static_cast<int64_t>(n) * a.H + h) * K * Vc;
  for (int64_t i = 0; i < K; ++i)
    for (int64_t j = 0; j < Vc; ++j) dst[i * Vc + j] = S[i * VP + j];
}

// y[0, n) += alpha * x[0, n); n a multiple of the lane count.
HWY_INLINE void AxpyRow(float alpha, const float* HWY_RESTRICT x, float* HWY_RESTRICT y, size_t n) {
  const hn::ScalableTag<float> df;
  const auto va = hn::Set(df, alpha);
  for (size_t j = 0; j < n; j += hn::Lanes(df))
    hn::StoreU(hn::MulAdd(va, hn::LoadU(df, x + j), hn::LoadU(df, y + j)), df, y + j);
}

// x . y over n floats; n a multiple of the lane count.
HWY_INLINE float DotRow(const float* HWY_RESTRICT x, const float* HWY_RESTRICT y, size_t n) {
  const hn::ScalableTag<float> df;
  auto acc = hn::Zero(df);
  for (size_t j = 0; j < n; j += hn::Lanes(df))
    acc = hn::MulAdd(hn::LoadU(df, x + j), hn::LoadU(df, y + j), acc);
  return hn::GetLane(hn::SumOfLanes(df, acc));
}

// The scalar log gate (g or g_gamma) at token r of value head h; 0 without a gate. Not for gk.
HWY_INLINE float ScalarLogGate(const detail::LinearArgs& a, const detail::LinearSeq& s, int64_t r,
                               int64_t h) {
  if (a.gate == detail::GateKind::kScalar)
    return static_cast<float>(
        load_at(a.g, s.batch * a.g.stride(0) + r * a.g.stride(1) + h * a.g.stride(2)));
  if (a.gate == detail::GateKind::kConstant)
    return static_cast<float>(load_at(a.g_gamma, h * a.g_gamma.stride(0)));
  return 0.f;
}

// The log gate of the state rows at token r of value head h, K entries, into `dst`. Returns
// false when there is no row gate (dst untouched).
HWY_INLINE bool LoadLogGateK(const detail::LinearArgs& a, const detail::LinearSeq& s, int64_t r,
                             int64_t h, float* HWY_RESTRICT dst) {
  float x = 0.f;
  switch (a.gate) {
    case detail::GateKind::kNone:
      return false;
    case detail::GateKind::kScalar:
      x = static_cast<float>(
          load_at(a.g, s.batch * a.g.stride(0) + r * a.g.stride(1) + h * a.g.stride(2)));
      break;
    case detail::GateKind::kConstant:
      x = static_cast<float>(load_at(a.g_gamma, h * a.g_gamma.stride(0)));
      break;
    case detail::GateKind::kKeyDim:
      LoadRowF32(detail::row_ptr(a.gk, s.batch, r, h), a.gk.dtype(), a.K, dst, a.K);
      return true;
  }
  for (int64_t i = 0; i < a.K; ++i) dst[i] = x;
  return true;
}

// exp of the row gate at token r: the decay of each state row. Returns false without a gate.
HWY_INLINE bool LoadDecayK(const detail::LinearArgs& a, const detail::LinearSeq& s, int64_t r,
                           int64_t h, float* HWY_RESTRICT dst) {
  if (!LoadLogGateK(a, s, r, h, dst)) return false;
  for (int64_t i = 0; i < a.K; ++i) dst[i] = std::exp(dst[i]);
  return true;
}

// exp of the column gate gv at token r (VP entries; padding decays by 1). False without gv.
HWY_INLINE bool LoadDecayV(const LinearCore& c, const detail::LinearSeq& s, int64_t r, int64_t h,
                           float* HWY_RESTRICT dst, size_t VP) {
  if (!c.gv.defined()) return false;
  LoadRowF32(detail::row_ptr(c.gv, s.batch, r, h), c.gv.dtype(), c.Vc, dst, VP);
  for (int64_t j = 0; j < c.Vc; ++j) dst[j] = std::exp(dst[j]);
  for (size_t j = c.Vc; j < VP; ++j) dst[j] = 1.f;
  return true;
}

}  // namespace subq::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
