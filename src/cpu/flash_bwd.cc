// Exact attention backward on the CPU, from the forward's saved lse (FlashAttention-2's
// algorithm; nothing Tq x Tk is stored).
//
// 1. Pre-pass, parallel over (sequence, head, query block): pack what every key block will
//    reuse: Q^T scaled [D x BQ], dO^T [Dv x BQ], Q and dO rows as f32 when they cannot be read
//    in place, lse (+inf for padding and for rows that saw nothing, so P = 0 there) and
//    delta_i = dO_i . O_i.
// 2. Main pass, one work item per (sequence, kv head, key block), longest first. The item owns
//    dK and dV of its key block, so they accumulate without synchronisation, over every query
//    head of the GQA group and every query block that can see the key block:
//      S^T  = K Q^T (scaled), softcap/ALiBi/mask          P^T = exp(S^T - lse)
//      dV  += P^T dO          dP^T = V dO^T               dS^T = scale P^T o (dP^T - delta)
//      dK  += dS^T Q          dQ_blk = dS K   -> added to an f32 dQ accumulator under a lock
//    (5 GEMM tiles per block pair: 2.5x the forward's FLOPs.)
// 3. dQ is converted to its output dtype.
// dK and dV do not depend on the thread count; dQ's additions happen in completion order, so
// with several threads it can differ from 1 thread in the last bits.
#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <vector>

#include "src/cpu/flash_cpu.h"
#include "subq/tensor.h"
#include "subq/threads.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/cpu/flash_bwd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/highway.h"
#include "src/cpu/attn_tile-inl.h"

HWY_BEFORE_NAMESPACE();
namespace subq::cpu::HWY_NAMESPACE {
namespace {

using detail::FlashArgs;
using detail::FlashSeq;
using detail::row_ptr;

// Everything the main pass reads per (sequence, head, query block), in one f32 arena.
struct QPack {
  size_t D, Dv, DP, DvP;
  bool q_rows, do_rows;  // whether Q / dO rows are packed (else read in place)
  size_t Floats() const {
    return D * kBlockQ + Dv * kBlockQ + (q_rows ? kBlockQ * DP : 0) +
           (do_rows ? kBlockQ * DvP : 0) + 2 * kBlockQ;
  }
  // Pointers into the block at `base`.
  float* qt(float* base) const { return base; }
  float* dot(float* base) const { return base + D * kBlockQ; }
  float* qrows(float* base) const { return dot(base) + Dv * kBlockQ; }
  float* dorows(float* base) const { return qrows(base) + (q_rows ? kBlockQ * DP : 0); }
  float* lse(float* base) const { return dorows(base) + (do_rows ? kBlockQ * DvP : 0); }
  float* delta(float* base) const { return lse(base) + kBlockQ; }
};

struct Layout {
  std::vector<int64_t> block_base;  // first query block index of each sequence
  int64_t nblocks = 0;              // query blocks over all sequences (per head)
};

void PackQueryBlock(const FlashArgs& a, const QPack& pk, const FlashSeq& s, int64_t h, int64_t q0,
                    float* base, float* row) {
  const hn::ScalableTag<float> df;
  const size_t L = hn::Lanes(df);
  const int64_t nq = std::min<int64_t>(kBlockQ, s.Tq - q0);
  const size_t ncols = RoundUp(nq, L);
  const int64_t D = a.D, Dv = a.Dv;
  float *qt = pk.qt(base), *dot = pk.dot(base), *lse = pk.lse(base), *delta = pk.delta(base);
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < static_cast<int64_t>(kBlockQ); ++i) {
    if (i >= nq) {
      if (i < static_cast<int64_t>(ncols)) {
        for (int64_t d = 0; d < D; ++d) qt[d * kBlockQ + i] = 0.f;
        for (int64_t d = 0; d < Dv; ++d) dot[d * kBlockQ + i] = 0.f;
      }
      lse[i] = inf;
      delta[i] = 0.f;
      continue;
    }
    const int64_t r = s.q_start + q0 + i;
    LoadRowF32(row_ptr(a.q, s.batch, r, h), a.q.dtype(), D, row, pk.DP);
    for (int64_t d = 0; d < D; ++d) qt[d * kBlockQ + i] = row[d] * a.scale;
    if (pk.q_rows) std::copy(row, row + pk.DP, pk.qrows(base) + i * pk.DP);
    // delta = dO . O, both read as f32.
    LoadRowF32(row_ptr(a.dout, s.batch, r, h), a.dout.dtype(), Dv, row, pk.DvP);
    for (int64_t d = 0; d < Dv; ++d) dot[d * kBlockQ + i] = row[d];
    if (pk.do_rows) std::copy(row, row + pk.DvP, pk.dorows(base) + i * pk.DvP);
    float* orow = row + pk.DvP;
    LoadRowF32(row_ptr(a.out, s.batch, r, h), a.out.dtype(), Dv, orow, Dv);
    double dl = 0;
    for (int64_t d = 0; d < Dv; ++d) dl += static_cast<double>(row[d]) * orow[d];
    delta[i] = static_cast<float>(dl);
    const float l = a.lse.data_as<float>()[s.batch * a.lse.stride(0) + h * a.lse.stride(1) +
                                           r * a.lse.stride(2)];
    lse[i] = l == -inf ? inf : l;  // exp(s - inf) = 0: a row that saw nothing has P = 0
  }
}

struct BwdItem {
  int32_t seq, kvh;
  int64_t k0, cost;
};

// Queries [lo, hi) that can see keys [k0, k0 + nk).
void QueryRange(const FlashSeq& s, int64_t k0, int64_t nk, int64_t left, int64_t right, int64_t& lo,
                int64_t& hi) {
  const int64_t off = s.Tk - s.Tq;
  lo = right >= 0 ? std::max<int64_t>(0, k0 - off - right) : 0;
  hi = left >= 0 ? std::min<int64_t>(s.Tq, k0 + nk - 1 - off + left + 1) : s.Tq;
}

struct KvScratch {
  float *kt, *vt, *st, *dpt, *dk, *dv, *dq, *capd;
  static size_t Floats(size_t DP, size_t DvP) {
    return 2 * kBlockK * DP + 2 * kBlockK * DvP + 3 * kBlockK * kBlockQ + kBlockQ * DP;
  }
  KvScratch(float* p, size_t DP, size_t DvP) {
    kt = p;
    vt = kt + kBlockK * DP;
    st = vt + kBlockK * DvP;
    dpt = st + kBlockK * kBlockQ;
    dk = dpt + kBlockK * kBlockQ;
    dv = dk + kBlockK * DP;
    dq = dv + kBlockK * DvP;
    capd = dq + kBlockQ * DP;  // the softcap's derivative, [BK x BQ]
  }
};

void BackwardItem(const FlashArgs& a, const BwdItem& it, const QPack& pk, const Layout& lay,
                  float* packs, float* dq_acc, std::vector<std::mutex>& locks, const KvScratch& w) {
  const hn::ScalableTag<float> df;
  const size_t L = hn::Lanes(df);
  using V = hn::Vec<decltype(df)>;
  const FlashSeq& s = a.seqs[it.seq];
  const int64_t D = a.D, Dv = a.Dv, DP = pk.DP, DvP = pk.DvP;
  const int64_t k0 = it.k0, nk = std::min<int64_t>(kBlockK, s.Tk - k0);
  const int64_t off = s.Tk - s.Tq;

  // K: broadcast operand of S^T and B operand of dQ (whole vectors); V: broadcast operand of
  // dP^T only.
  const F32Rows K = RowsAsF32(a.k, s.batch, s.k_start + k0, nk, it.kvh, true, w.kt, DP);
  const F32Rows Vr = RowsAsF32(a.v, s.batch, s.k_start + k0, nk, it.kvh, false, w.vt, DvP);
  const float* kp = K.p;
  const size_t ldk = K.ld;
  std::fill(w.dk, w.dk + nk * DP, 0.f);
  std::fill(w.dv, w.dv + nk * DvP, 0.f);

  int64_t qlo, qhi;
  QueryRange(s, k0, nk, a.left, a.right, qlo, qhi);
  const V scale = hn::Set(df, a.scale);
  for (int64_t h = it.kvh * a.group(); h < (it.kvh + 1) * a.group(); ++h) {
    const float slope = a.slope(it.seq, h);
    // Query blocks are aligned to multiples of BQ (the packs are).
    for (int64_t q0 = qlo / kBlockQ * kBlockQ; q0 < qhi; q0 += kBlockQ) {
      const int64_t nq = std::min<int64_t>(kBlockQ, s.Tq - q0);
      const size_t ncols = RoundUp(nq, L);
      const int64_t qb = lay.block_base[it.seq] + q0 / static_cast<int64_t>(kBlockQ);
      float* base = packs + (qb * a.H + h) * pk.Floats();
      const float* qrows;
      size_t ldq;
      if (pk.q_rows) {
        qrows = pk.qrows(base);
        ldq = DP;
      } else {
        qrows = reinterpret_cast<const float*>(row_ptr(a.q, s.batch, s.q_start + q0, h));
        ldq = a.q.stride(1);
      }
      const float* dorows;
      size_t lddo;
      if (pk.do_rows) {
        dorows = pk.dorows(base);
        lddo = DvP;
      } else {
        dorows = reinterpret_cast<const float*>(row_ptr(a.dout, s.batch, s.q_start + q0, h));
        lddo = a.dout.stride(1);
      }

      // S^T = K Q^T (scale folded into Q^T), softcap, ALiBi, mask.
      GemmTile(nk, ncols, D, kp, ldk, 1, pk.qt(base), kBlockQ, w.st, kBlockQ, TileInit::kOverwrite);
      ScoreEpilogue(w.st, kBlockQ, ncols, {q0, nq, k0, nk, off, a.left, a.right}, a.softcap, slope,
                    w.capd);
      // dP^T = V dO^T.
      GemmTile(nk, ncols, Dv, Vr.p, Vr.ld, 1, pk.dot(base), kBlockQ, w.dpt, kBlockQ,
               TileInit::kOverwrite);
      // P^T = exp(S^T - lse) (kept in st); dS^T = scale * P^T o (dP^T - delta) * softcap'.
      const float* lse = pk.lse(base);
      const float* delta = pk.delta(base);
      const bool capped = a.softcap > 0;
      for (size_t i = 0; i < ncols; i += L) {
        const V l = hn::LoadU(df, lse + i), dl = hn::LoadU(df, delta + i);
        for (int64_t j = 0; j < nk; ++j) {
          float* sp = w.st + j * kBlockQ + i;
          float* dp = w.dpt + j * kBlockQ + i;
          const V sv = hn::LoadU(df, sp);
          const V p = hn::Exp(df, hn::Sub(sv, l));
          V ds = hn::Mul(hn::Mul(p, hn::Sub(hn::LoadU(df, dp), dl)), scale);
          if (capped) {
            // d(c tanh(x / c))/dx = 1 - tanh^2(x / c), saved by the epilogue before the ALiBi
            // bias was added (masked entries have p = 0 and a finite factor: ds stays 0).
            ds = hn::Mul(ds, hn::LoadU(df, w.capd + j * kBlockQ + i));
          }
          hn::StoreU(p, df, sp);
          hn::StoreU(ds, df, dp);
        }
      }
      // dV += P^T dO; dK += dS^T Q (A operands read with a_rs = BQ, a_cs = 1).
      GemmTile(nk, DvP, nq, w.st, kBlockQ, 1, dorows, lddo, w.dv, DvP, TileInit::kAccumulate);
      GemmTile(nk, DP, nq, w.dpt, kBlockQ, 1, qrows, ldq, w.dk, DP, TileInit::kAccumulate);
      // dQ_blk = dS K (A = dS, the transpose of dS^T: a_rs = 1, a_cs = BQ).
      GemmTile(nq, DP, nk, w.dpt, 1, kBlockQ, kp, ldk, w.dq, DP, TileInit::kOverwrite);
      {
        std::lock_guard<std::mutex> lock(locks[(qb * a.H + h) % locks.size()]);
        float* acc = dq_acc + (qb * a.H + h) * kBlockQ * DP;
        for (int64_t i = 0; i < nq; ++i)
          for (int64_t d = 0; d < DP; d += static_cast<int64_t>(L))
            hn::StoreU(hn::Add(hn::LoadU(df, acc + i * DP + d), hn::LoadU(df, w.dq + i * DP + d)),
                       df, acc + i * DP + d);
      }
    }
  }
  // Write dK and dV rows of this key block (the item owns them).
  for (int64_t j = 0; j < nk; ++j) {
    StoreRowF32(w.dk + j * DP, D, (row_ptr(a.dk, s.batch, s.k_start + k0 + j, it.kvh)),
                a.dk.dtype());
    StoreRowF32(w.dv + j * DvP, Dv, (row_ptr(a.dv, s.batch, s.k_start + k0 + j, it.kvh)),
                a.dv.dtype());
  }
}

// Rows of a [B, T, heads, dim] output that no sequence covers (varlen with a short
// cu_seqlens) get zero gradients.
void ZeroUncoveredRows(const TensorView& t,
                       const std::vector<std::pair<int64_t, int64_t>>& covered) {
  std::vector<char> hit(t.size(1), 0);
  for (auto [start, n] : covered)
    for (int64_t r = start; r < start + n; ++r) hit[r] = 1;
  for (int64_t b = 0; b < t.size(0); ++b)
    for (int64_t r = 0; r < t.size(1); ++r)
      if (!hit[r]) fill(t.narrow(0, b, 1).narrow(1, r, 1), 0.0);
}

void FlashBackward(const FlashArgs& a) {
  const size_t L = hn::Lanes(hn::ScalableTag<float>());
  QPack pk;
  pk.D = a.D;
  pk.Dv = a.Dv;
  pk.DP = RoundUp(a.D, L);
  pk.DvP = RoundUp(a.Dv, L);
  pk.q_rows = !(a.q.dtype() == DType::kF32 && a.D % static_cast<int64_t>(L) == 0);
  pk.do_rows = !(a.dout.dtype() == DType::kF32 && a.Dv % static_cast<int64_t>(L) == 0);

  Layout lay;
  for (const FlashSeq& s : a.seqs) {
    lay.block_base.push_back(lay.nblocks);
    lay.nblocks += (s.Tq + kBlockQ - 1) / kBlockQ;
  }
  const size_t pack_floats = pk.Floats();
  Scratch packs(static_cast<size_t>(lay.nblocks * a.H) * pack_floats);
  Scratch dq_acc(static_cast<size_t>(lay.nblocks * a.H) * kBlockQ * pk.DP);
  const size_t row_floats = RoundUp(pk.DP + 2 * pk.DvP, 16);
  Scratch rows(row_floats * num_threads());

  // 1. Pre-pass over (sequence, query block, head).
  struct QItem {
    int32_t seq;
    int64_t q0, qb;
  };
  std::vector<QItem> qitems;
  for (size_t n = 0; n < a.seqs.size(); ++n)
    for (int64_t q0 = 0; q0 < a.seqs[n].Tq; q0 += kBlockQ)
      qitems.push_back(
          {static_cast<int32_t>(n), q0, lay.block_base[n] + q0 / static_cast<int64_t>(kBlockQ)});
  parallel_for(static_cast<int64_t>(qitems.size()) * a.H, [&](int64_t idx, int thread) {
    const QItem& qi = qitems[idx / a.H];
    const int64_t h = idx % a.H;
    PackQueryBlock(a, pk, a.seqs[qi.seq], h, qi.q0, packs.data() + (qi.qb * a.H + h) * pack_floats,
                   rows.data() + thread * row_floats);
    std::fill_n(dq_acc.data() + (qi.qb * a.H + h) * kBlockQ * pk.DP, kBlockQ * pk.DP, 0.f);
  });

  // 2. Main pass over (sequence, kv head, key block), longest first.
  std::vector<BwdItem> items;
  for (size_t n = 0; n < a.seqs.size(); ++n) {
    const FlashSeq& s = a.seqs[n];
    for (int64_t k0 = 0; k0 < s.Tk; k0 += kBlockK) {
      int64_t lo, hi;
      QueryRange(s, k0, std::min<int64_t>(kBlockK, s.Tk - k0), a.left, a.right, lo, hi);
      const int64_t cost = 1 + std::max<int64_t>(0, hi - lo);
      for (int64_t kvh = 0; kvh < a.Hkv; ++kvh)
        items.push_back({static_cast<int32_t>(n), static_cast<int32_t>(kvh), k0, cost});
    }
  }
  std::stable_sort(items.begin(), items.end(),
                   [](const BwdItem& x, const BwdItem& y) { return x.cost > y.cost; });
  const size_t per_thread = RoundUp(KvScratch::Floats(pk.DP, pk.DvP), 16);
  Scratch scratch(per_thread * num_threads());
  std::vector<std::mutex> locks(256);
  parallel_for(static_cast<int64_t>(items.size()), [&](int64_t i, int thread) {
    KvScratch w(scratch.data() + per_thread * thread, pk.DP, pk.DvP);
    BackwardItem(a, items[i], pk, lay, packs.data(), dq_acc.data(), locks, w);
  });

  // 3. dQ to its dtype.
  parallel_for(static_cast<int64_t>(qitems.size()) * a.H, [&](int64_t idx, int) {
    const QItem& qi = qitems[idx / a.H];
    const int64_t h = idx % a.H;
    const FlashSeq& s = a.seqs[qi.seq];
    const float* acc = dq_acc.data() + (qi.qb * a.H + h) * kBlockQ * pk.DP;
    const int64_t nq = std::min<int64_t>(kBlockQ, s.Tq - qi.q0);
    for (int64_t i = 0; i < nq; ++i)
      StoreRowF32(acc + i * pk.DP, a.D, (row_ptr(a.dq, s.batch, s.q_start + qi.q0 + i, h)),
                  a.dq.dtype());
  });

  // Varlen rows outside every sequence, and keys no sequence covers: zero.
  std::vector<std::pair<int64_t, int64_t>> qcov, kcov;
  for (const FlashSeq& s : a.seqs) {
    qcov.push_back({s.q_start, s.Tq});
    kcov.push_back({s.k_start, s.Tk});
  }
  if (a.varlen) {
    ZeroUncoveredRows(a.dq, qcov);
    ZeroUncoveredRows(a.dk, kcov);
    ZeroUncoveredRows(a.dv, kcov);
  }
}

}  // namespace
}  // namespace subq::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace subq::cpu {

HWY_EXPORT(FlashBackward);

void flash_backward(const detail::FlashArgs& a) {
  HWY_DYNAMIC_DISPATCH(FlashBackward)(a);
}

}  // namespace subq::cpu
#endif
