// Exact attention forward on the CPU: FlashAttention-2's tiled online softmax.
//
// Work item = (sequence, query head, block of kBlockQ queries); items go to the thread pool
// longest first. For one item:
//   Q^T  [D x BQ]  packed once, pre-multiplied by the softmax scale
//   for each key block the mask can reach (others are skipped):
//     S^T [BK x BQ] = K_blk Q^T                  (K read in place, broadcast operand)
//     softcap, ALiBi, mask                        (-inf where not visible)
//     m_new = max(m, colmax S^T); alpha = exp(m - m_new); P^T = exp(S^T - m_new)
//     l = alpha l + colsum P^T
//     O [BQ x Dv] = diag(alpha) O + P V_blk       (one fused GEMM tile)
//   out = O / l, lse = m + log l                  (a query that saw nothing: 0 and -inf)
// With the queries along the vector lanes, max, sum and rescale are lane-wise: no horizontal
// reductions anywhere. Each item is computed by one thread in a fixed order, so results do not
// depend on the thread count.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "src/cpu/flash_cpu.h"
#include "subq/tensor.h"
#include "subq/threads.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/cpu/flash_fwd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/highway.h"
#include "src/cpu/attn_tile-inl.h"

HWY_BEFORE_NAMESPACE();
namespace subq::cpu::HWY_NAMESPACE {
namespace {

using detail::FlashArgs;
using detail::FlashSeq;
using detail::row_ptr;

struct FwdItem {
  int32_t seq, head;
  int64_t q0;
  int64_t cost;  // key blocks to visit, for longest-first scheduling
};

// The key range [lo, hi) that queries [q0, q0 + nq) can see.
void KeyRange(const FlashSeq& s, int64_t q0, int64_t nq, int64_t left, int64_t right, int64_t& lo,
              int64_t& hi) {
  const int64_t off = s.Tk - s.Tq;
  lo = left >= 0 ? std::max<int64_t>(0, q0 + off - left) : 0;
  hi = right >= 0 ? std::min<int64_t>(s.Tk, q0 + nq - 1 + off + right + 1) : s.Tk;
}

// Per-thread scratch, carved from one allocation.
struct FwdScratch {
  float *qt, *st, *o, *m, *l, *alpha, *kt, *vt, *row;
  static size_t Floats(size_t D, size_t DvP) {
    return D * kBlockQ + kBlockK * kBlockQ + kBlockQ * DvP + 3 * kBlockQ + kBlockK * D +
           kBlockK * DvP + D;
  }
  FwdScratch(float* p, size_t D, size_t DvP) {
    qt = p;
    st = qt + D * kBlockQ;
    o = st + kBlockK * kBlockQ;
    m = o + kBlockQ * DvP;
    l = m + kBlockQ;
    alpha = l + kBlockQ;
    kt = alpha + kBlockQ;
    vt = kt + kBlockK * D;
    row = vt + kBlockK * DvP;
  }
};

void ForwardItem(const FlashArgs& a, const FwdItem& it, const FwdScratch& w) {
  const hn::ScalableTag<float> df;
  const size_t L = hn::Lanes(df);
  using V = hn::Vec<decltype(df)>;
  const FlashSeq& s = a.seqs[it.seq];
  const int64_t h = it.head, kvh = h / a.group(), D = a.D, Dv = a.Dv;
  const size_t DvP = RoundUp(Dv, L);
  const int64_t q0 = it.q0, nq = std::min<int64_t>(kBlockQ, s.Tq - q0);
  const size_t ncols = RoundUp(nq, L);  // S^T columns computed (padding columns are zero q)
  const int64_t off = s.Tk - s.Tq;
  const float slope = a.slope(it.seq, h);

  // Q^T, scaled: qt[d * BQ + i] = scale * q[q0 + i, d].
  for (int64_t i = 0; i < static_cast<int64_t>(ncols); ++i) {
    if (i < nq) {
      LoadRowF32(row_ptr(a.q, s.batch, s.q_start + q0 + i, h), a.q.dtype(), D, w.row, D);
      for (int64_t d = 0; d < D; ++d) w.qt[d * kBlockQ + i] = w.row[d] * a.scale;
    } else {
      for (int64_t d = 0; d < D; ++d) w.qt[d * kBlockQ + i] = 0.f;
    }
  }
  for (size_t i = 0; i < ncols; i += L) {
    hn::StoreU(hn::Set(df, -std::numeric_limits<float>::infinity()), df, w.m + i);
    hn::StoreU(hn::Zero(df), df, w.l + i);
  }

  int64_t klo, khi;
  KeyRange(s, q0, nq, a.left, a.right, klo, khi);
  bool first = true;
  for (int64_t k0 = klo; k0 < khi; k0 += kBlockK) {
    const int64_t nk = std::min<int64_t>(kBlockK, khi - k0);
    // K is the broadcast operand (any row stride); V is read by whole vectors.
    const F32Rows K = RowsAsF32(a.k, s.batch, s.k_start + k0, nk, kvh, false, w.kt, D);
    const F32Rows Vr = RowsAsF32(a.v, s.batch, s.k_start + k0, nk, kvh, true, w.vt, DvP);

    // S^T = K Q^T, then softcap / ALiBi / mask.
    GemmTile(nk, ncols, D, K.p, K.ld, 1, w.qt, kBlockQ, w.st, kBlockQ, TileInit::kOverwrite);
    ScoreEpilogue(w.st, kBlockQ, ncols, {q0, nq, k0, nk, off, a.left, a.right}, a.softcap, slope);

    // Online softmax, lane-wise over the queries.
    const V neg_inf = hn::Set(df, -std::numeric_limits<float>::infinity());
    for (size_t i = 0; i < ncols; i += L) {
      const V m_old = hn::LoadU(df, w.m + i);
      V mx = m_old;
      for (int64_t j = 0; j < nk; ++j) mx = hn::Max(mx, hn::LoadU(df, w.st + j * kBlockQ + i));
      // A query with nothing visible yet keeps m = -inf; subtracting 0 instead keeps
      // exp(-inf - m) = 0 rather than NaN.
      const V m_safe = hn::IfThenZeroElse(hn::Eq(mx, neg_inf), mx);
      const V alpha = hn::Exp(df, hn::Sub(m_old, m_safe));
      V sum = hn::Zero(df);
      for (int64_t j = 0; j < nk; ++j) {
        float* p = w.st + j * kBlockQ + i;
        const V e = hn::Exp(df, hn::Sub(hn::LoadU(df, p), m_safe));
        hn::StoreU(e, df, p);
        sum = hn::Add(sum, e);
      }
      hn::StoreU(hn::MulAdd(hn::LoadU(df, w.l + i), alpha, sum), df, w.l + i);
      hn::StoreU(mx, df, w.m + i);
      hn::StoreU(alpha, df, w.alpha + i);
    }

    // O = diag(alpha) O + P V: A = P (row i at st[. * BQ + i], so a_rs = 1, a_cs = BQ).
    GemmTile(nq, DvP, nk, w.st, 1, kBlockQ, Vr.p, Vr.ld, w.o, DvP,
             first ? TileInit::kOverwrite : TileInit::kRowScaled, w.alpha);
    first = false;
  }

  // out = O / l; lse = m + log l.
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < nq; ++i) {
    const float l = w.l[i];
    const float inv = l > 0 ? 1.f / l : 0.f;
    float* o = w.o + i * DvP;
    if (first) {
      std::fill(o, o + Dv, 0.f);
    } else {
      for (int64_t d = 0; d < Dv; ++d) o[d] *= inv;
    }
    char* dst = (row_ptr(a.out, s.batch, s.q_start + q0 + i, h));
    StoreRowF32(o, Dv, dst, a.out.dtype());
    float* lse = a.lse.data_as<float>() + s.batch * a.lse.stride(0) + h * a.lse.stride(1) +
                 (s.q_start + q0 + i) * a.lse.stride(2);
    *lse = l > 0 ? w.m[i] + std::log(l) : neg_inf;
  }
}

void FlashForward(const FlashArgs& a) {
  const size_t L = hn::Lanes(hn::ScalableTag<float>());
  std::vector<FwdItem> items;
  for (size_t n = 0; n < a.seqs.size(); ++n) {
    const FlashSeq& s = a.seqs[n];
    for (int64_t q0 = 0; q0 < s.Tq; q0 += kBlockQ) {
      int64_t lo, hi;
      KeyRange(s, q0, std::min<int64_t>(kBlockQ, s.Tq - q0), a.left, a.right, lo, hi);
      const int64_t cost = 1 + std::max<int64_t>(0, hi - lo);
      for (int64_t h = 0; h < a.H; ++h)
        items.push_back({static_cast<int32_t>(n), static_cast<int32_t>(h), q0, cost});
    }
  }
  std::stable_sort(items.begin(), items.end(),
                   [](const FwdItem& x, const FwdItem& y) { return x.cost > y.cost; });

  const size_t DvP = RoundUp(a.Dv, L);
  const size_t per_thread = RoundUp(FwdScratch::Floats(a.D, DvP), 16);
  Scratch scratch(per_thread * num_threads());
  parallel_for(static_cast<int64_t>(items.size()), [&](int64_t i, int thread) {
    FwdScratch w(scratch.data() + per_thread * thread, a.D, DvP);
    ForwardItem(a, items[i], w);
  });
}

}  // namespace
}  // namespace subq::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace subq::cpu {

HWY_EXPORT(FlashForward);

void flash_forward(const detail::FlashArgs& a) {
  HWY_DYNAMIC_DISPATCH(FlashForward)(a);
}

}  // namespace subq::cpu
#endif
