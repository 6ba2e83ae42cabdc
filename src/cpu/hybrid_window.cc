// The softmax-window part of the hybrid: per query, the logits against the meta tokens and the
// last w keys, their max c, e_i = gamma exp(s_i - c), and sum_i e_i v_i and sum_i e_i. Work
// item = (batch, head, block of kBlock queries); the block's keys (its window reaches w - 1
// rows back) and the meta tokens are converted to f32 once per item. The backward runs one item
// per (batch, head) so that the scattered key and value gradients of overlapping windows need
// no synchronisation.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "src/cpu/hybrid_window.h"
#include "subq/tensor.h"
#include "subq/threads.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/cpu/hybrid_window.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/highway.h"
#include "src/cpu/rows-inl.h"

HWY_BEFORE_NAMESPACE();
namespace subq::cpu::HWY_NAMESPACE {
namespace {

using detail::HybridArgs;
using detail::row_ptr;
using V = hn::Vec<hn::ScalableTag<float>>;

constexpr int64_t kBlock = 256;

HWY_INLINE float Dot(const float* HWY_RESTRICT x, const float* HWY_RESTRICT y, size_t n) {
  const hn::ScalableTag<float> df;
  V a0 = hn::Zero(df), a1 = hn::Zero(df);
  const size_t L = hn::Lanes(df);
  size_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L) {
    a0 = hn::MulAdd(hn::LoadU(df, x + i), hn::LoadU(df, y + i), a0);
    a1 = hn::MulAdd(hn::LoadU(df, x + i + L), hn::LoadU(df, y + i + L), a1);
  }
  for (; i < n; i += L) a0 = hn::MulAdd(hn::LoadU(df, x + i), hn::LoadU(df, y + i), a0);
  return hn::GetLane(hn::SumOfLanes(df, hn::Add(a0, a1)));
}

HWY_INLINE void Axpy(float a, const float* HWY_RESTRICT x, float* HWY_RESTRICT y, size_t n) {
  const hn::ScalableTag<float> df;
  const V va = hn::Set(df, a);
  for (size_t i = 0; i < n; i += hn::Lanes(df))
    hn::StoreU(hn::MulAdd(va, hn::LoadU(df, x + i), hn::LoadU(df, y + i)), df, y + i);
}

// Meta tokens of head h as f32 rows [M x width padded to wp].
void LoadMeta(const TensorView& t, int64_t h, int64_t M, int64_t width, size_t wp, float* dst) {
  for (int64_t m = 0; m < M; ++m) {
    float* row = dst + m * wp;
    for (int64_t i = 0; i < width; ++i)
      row[i] = static_cast<float>(load_at(t, h * t.stride(0) + m * t.stride(1) + i * t.stride(2)));
    for (size_t i = width; i < wp; ++i) row[i] = 0.f;
  }
}

struct Dims {
  size_t dP, vP;
};

// The softmax set of query n (meta tokens, then keys [lo, n]): its e_i into `e` (M + n - lo + 1
// entries) and the index (into e) of the max logit. kr / vr hold key / value rows starting at
// row r0.
int64_t Weights(const HybridArgs& a, const Dims& dm, const float* q, const float* mk,
                const float* kr, int64_t r0, int64_t n, float gamma, std::vector<float>& e) {
  const int64_t lo = std::max<int64_t>(0, n - a.w + 1);
  const int64_t cnt = a.M + n - lo + 1;
  e.resize(cnt);
  float c = -std::numeric_limits<float>::infinity();
  int64_t arg = 0;
  for (int64_t i = 0; i < cnt; ++i) {
    const float* key = i < a.M ? mk + i * dm.dP : kr + (lo + i - a.M - r0) * dm.dP;
    e[i] = a.scale * Dot(q, key, dm.dP);
    if (e[i] > c) c = e[i], arg = i;
  }
  for (int64_t i = 0; i < cnt; ++i) e[i] = gamma * std::exp(e[i] - c);
  return arg;
}

void Forward(const HybridArgs& a, float* num, float* den) {
  const size_t L = hn::Lanes(hn::ScalableTag<float>());
  const Dims dm{RoundUp(a.d, L), RoundUp(a.dv, L)};
  const int64_t nblocks = (a.T + kBlock - 1) / kBlock;
  const int64_t rows = kBlock + a.w;
  const size_t per = RoundUp(rows * (dm.dP + dm.vP) + a.M * (dm.dP + dm.vP) + dm.dP + dm.vP, 16);
  Scratch scratch(per * num_threads());
  parallel_for(a.B * a.H * nblocks, [&](int64_t it, int thread) {
    const int64_t b = it / (a.H * nblocks), h = (it / nblocks) % a.H, blk = it % nblocks;
    const int64_t n0 = blk * kBlock, n1 = std::min(a.T, n0 + kBlock);
    const int64_t r0 = std::max<int64_t>(0, n0 - a.w + 1);
    float* kr = scratch.data() + per * thread;
    float* vr = kr + rows * dm.dP;
    float* mk = vr + rows * dm.vP;
    float* mv = mk + a.M * dm.dP;
    float* q = mv + a.M * dm.vP;
    float* acc = q + dm.dP;
    for (int64_t r = r0; r < n1; ++r) {
      LoadRowF32(row_ptr(a.k, b, r, h), a.k.dtype(), a.d, kr + (r - r0) * dm.dP, dm.dP);
      LoadRowF32(row_ptr(a.v, b, r, h), a.v.dtype(), a.dv, vr + (r - r0) * dm.vP, dm.vP);
    }
    LoadMeta(a.meta_k, h, a.M, a.d, dm.dP, mk);
    LoadMeta(a.meta_v, h, a.M, a.dv, dm.vP, mv);
    thread_local std::vector<float> e;
    for (int64_t n = n0; n < n1; ++n) {
      LoadRowF32(row_ptr(a.q, b, n, h), a.q.dtype(), a.d, q, dm.dP);
      Weights(a, dm, q, mk, kr, r0, n, a.gamma[h], e);
      const int64_t lo = std::max<int64_t>(0, n - a.w + 1);
      std::fill(acc, acc + dm.vP, 0.f);
      float sum = 0;
      for (size_t i = 0; i < e.size(); ++i) {
        const int64_t idx = static_cast<int64_t>(i);
        const float* val = idx < a.M ? mv + idx * dm.vP : vr + (lo + idx - a.M - r0) * dm.vP;
        Axpy(e[i], val, acc, dm.vP);
        sum += e[i];
      }
      const int64_t row = (b * a.T + n) * a.H + h;
      std::copy(acc, acc + a.dv, num + row * a.dv);
      den[row] = sum;
    }
  });
}

void Backward(const HybridArgs& a, const float* dnum, const float* dden, float* dq, float* dk,
              float* dv, float* dmeta_k, float* dmeta_v, double* dgamma) {
  const size_t L = hn::Lanes(hn::ScalableTag<float>());
  const Dims dm{RoundUp(a.d, L), RoundUp(a.dv, L)};
  // One item per (batch, head): the whole sequence's keys and values as f32, and per-item
  // partial gradients of the meta tokens and of gamma.
  const size_t per = RoundUp(
      2 * a.T * dm.dP + 2 * a.T * dm.vP + 2 * a.M * (dm.dP + dm.vP) + 2 * dm.dP + dm.vP, 16);
  Scratch scratch(per * num_threads());
  const int64_t items = a.B * a.H;
  std::vector<float> meta_partial(items * a.M * (dm.dP + dm.vP), 0.f);
  std::vector<double> gamma_partial(items, 0.0);
  parallel_for(items, [&](int64_t it, int thread) {
    const int64_t b = it / a.H, h = it % a.H;
    float* kr = scratch.data() + per * thread;
    float* vr = kr + a.T * dm.dP;
    float* dkr = vr + a.T * dm.vP;
    float* dvr = dkr + a.T * dm.dP;
    float* mk = dvr + a.T * dm.vP;
    float* mv = mk + a.M * dm.dP;
    float* q = mv + a.M * dm.vP;
    float* dqr = q + dm.dP;
    float* dn = dqr + dm.dP;
    float* dmk = meta_partial.data() + it * a.M * (dm.dP + dm.vP);
    float* dmv = dmk + a.M * dm.dP;
    for (int64_t r = 0; r < a.T; ++r) {
      LoadRowF32(row_ptr(a.k, b, r, h), a.k.dtype(), a.d, kr + r * dm.dP, dm.dP);
      LoadRowF32(row_ptr(a.v, b, r, h), a.v.dtype(), a.dv, vr + r * dm.vP, dm.vP);
    }
    std::fill(dkr, dkr + a.T * dm.dP, 0.f);
    std::fill(dvr, dvr + a.T * dm.vP, 0.f);
    LoadMeta(a.meta_k, h, a.M, a.d, dm.dP, mk);
    LoadMeta(a.meta_v, h, a.M, a.dv, dm.vP, mv);
    thread_local std::vector<float> e, ds;
    const float gamma = a.gamma[h];
    double dgam = 0;
    for (int64_t n = 0; n < a.T; ++n) {
      const int64_t row = (b * a.T + n) * a.H + h;
      LoadRowF32(row_ptr(a.q, b, n, h), a.q.dtype(), a.d, q, dm.dP);
      std::copy(dnum + row * a.dv, dnum + row * a.dv + a.dv, dn);
      std::fill(dn + a.dv, dn + dm.vP, 0.f);
      const int64_t arg = Weights(a, dm, q, mk, kr, 0, n, gamma, e);
      const int64_t lo = std::max<int64_t>(0, n - a.w + 1);
      ds.resize(e.size());
      float dc = 0;
      for (size_t i = 0; i < e.size(); ++i) {
        const int64_t idx = static_cast<int64_t>(i);
        const float* val = idx < a.M ? mv + idx * dm.vP : vr + (lo + idx - a.M) * dm.vP;
        float* dval = idx < a.M ? dmv + idx * dm.vP : dvr + (lo + idx - a.M) * dm.vP;
        const float de = Dot(dn, val, dm.vP) + dden[row];
        dgam += static_cast<double>(e[i]) * de / gamma;
        ds[i] = e[i] * de;
        dc -= ds[i];
        Axpy(e[i], dn, dval, dm.vP);
      }
      ds[arg] += dc;  // c is the max logit: its gradient goes to the argmax
      std::fill(dqr, dqr + dm.dP, 0.f);
      for (size_t i = 0; i < e.size(); ++i) {
        const int64_t idx = static_cast<int64_t>(i);
        const float* key = idx < a.M ? mk + idx * dm.dP : kr + (lo + idx - a.M) * dm.dP;
        float* dkey = idx < a.M ? dmk + idx * dm.dP : dkr + (lo + idx - a.M) * dm.dP;
        Axpy(a.scale * ds[i], key, dqr, dm.dP);
        Axpy(a.scale * ds[i], q, dkey, dm.dP);
      }
      float* dst = dq + row * a.d;
      for (int64_t i = 0; i < a.d; ++i) dst[i] += dqr[i];
    }
    for (int64_t r = 0; r < a.T; ++r) {
      const int64_t row = (b * a.T + r) * a.H + h;
      for (int64_t i = 0; i < a.d; ++i) dk[row * a.d + i] += dkr[r * dm.dP + i];
      for (int64_t i = 0; i < a.dv; ++i) dv[row * a.dv + i] += dvr[r * dm.vP + i];
    }
    gamma_partial[it] = dgam;
  });
  // Per-head sums over the batch, in item order.
  for (int64_t it = 0; it < items; ++it) {
    const int64_t h = it % a.H;
    if (dgamma) dgamma[h] += gamma_partial[it];
    const float* dmk = meta_partial.data() + it * a.M * (dm.dP + dm.vP);
    const float* dmv = dmk + a.M * dm.dP;
    for (int64_t m = 0; m < a.M; ++m) {
      if (dmeta_k)
        for (int64_t i = 0; i < a.d; ++i) dmeta_k[(h * a.M + m) * a.d + i] += dmk[m * dm.dP + i];
      if (dmeta_v)
        for (int64_t i = 0; i < a.dv; ++i) dmeta_v[(h * a.M + m) * a.dv + i] += dmv[m * dm.vP + i];
    }
  }
}

}  // namespace
}  // namespace subq::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace subq::cpu {

HWY_EXPORT(Forward);
HWY_EXPORT(Backward);

void hybrid_window_forward(const detail::HybridArgs& a, float* num, float* den) {
  HWY_DYNAMIC_DISPATCH(Forward)(a, num, den);
}

void hybrid_window_backward(const detail::HybridArgs& a, const float* dnum, const float* dden,
                            float* dq, float* dk, float* dv, float* dmeta_k, float* dmeta_v,
                            double* dgamma) {
  HWY_DYNAMIC_DISPATCH(Backward)(a, dnum, dden, dq, dk, dv, dmeta_k, dmeta_v, dgamma);
}

}  // namespace subq::cpu
#endif
