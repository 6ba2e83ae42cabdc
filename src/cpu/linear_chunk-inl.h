// Pieces shared by the chunked linear-attention kernels (linear_chunk.cc for scalar gates,
// linear_chunk_gk.cc for per-key-dim gates): buffer layout, chunk loading with cumulative
// gates, masks and decays, and the drivers that run one work item per (sequence, head).
// Per-target include guard: compiled once per Highway target.
#if defined(SUBQ_CPU_LINEAR_CHUNK_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SUBQ_CPU_LINEAR_CHUNK_INL_H_
#undef SUBQ_CPU_LINEAR_CHUNK_INL_H_
#else
#define SUBQ_CPU_LINEAR_CHUNK_INL_H_
#endif

#include <algorithm>
#include <cmath>
#include <vector>

#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "src/cpu/gemm_tile-inl.h"
#include "src/cpu/linear_tile-inl.h"
#include "subq/threads.h"

HWY_BEFORE_NAMESPACE();
namespace subq::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using detail::GateKind;
using detail::LinearArgs;
using detail::LinearSeq;
using detail::row_ptr;

// Shapes of one item's buffers. C = chunk; KW/VW = K/Vc rounded up to the lane count (the
// widths the GEMM tiles compute); KP/VP/ldC = the row strides of buffers with K, Vc or C
// columns. A stride that is a multiple of 256 bytes maps the rows of a tile onto a few L1 sets
// and they evict each other; 16 floats of padding spread them out (measured: 58 -> 84 GFLOP/s
// on the 64 x 128 x 128 tile, docs/performance.md).
struct Dims {
  size_t C, ldC, K, KW, KP, Vc, VW, VP;
};

// The floor the chunked kernels clamp log gates to. exp(-1e4) is 0 in f32 and f64, so clamping
// changes no result, while -inf would make differences of cumulative sums NaN.
constexpr float kMinLogGate = -1e4f;

inline size_t PaddedStride(size_t width) {
  return width % 64 == 0 ? width + 16 : width;
}

// Buffers of one chunk, carved from per-thread scratch. With a per-key-dim gate (gk) there are
// also per-element cumulative gates (bk, bklo), their exponentials (ek = exp(b),
// egk = exp(Gamma - b)) and a product buffer tk, each [C x KP], and exp(Gamma) per key dim (gam).
struct ChunkBufs {
  float *q, *k, *v, *qt, *at, *o, *b, *blo, *rs;            // forward
  float *dO, *dOt, *dpt, *st, *dst, *dq, *dk, *dv;          // backward
  float *bk = nullptr, *bklo, *ek, *egk, *tk, *gam;         // per-dim kernel only
  float *bv = nullptr, *bvlo, *ev, *egv, *tv, *gamv, *dOs;  // with gv only
  static size_t Floats(const Dims& d, bool backward, bool gk, bool gv = false) {
    size_t n = 2 * d.C * d.KP + 2 * d.C * d.VP + d.KW * d.ldC + d.C * d.ldC + 2 * d.C +
               std::max(d.KP, d.C);
    if (backward)
      n += d.C * d.VP + d.VW * d.ldC + d.C * d.ldC + 2 * d.VW * d.KP + 2 * d.C * d.KP + d.C * d.VP;
    if (gk) n += 5 * d.C * d.KP + d.KP;
    if (gv) n += 6 * d.C * d.VP + d.VP;
    return n;
  }
  ChunkBufs(float* p, const Dims& d, bool backward, bool gk, bool gv = false) {
    q = p;
    k = q + d.C * d.KP;
    v = k + d.C * d.KP;
    qt = v + d.C * d.VP;
    at = qt + d.KW * d.ldC;
    o = at + d.C * d.ldC;
    b = o + d.C * d.VP;
    blo = b + d.C;
    rs = blo + d.C;
    float* e = rs + std::max(d.KP, d.C);
    if (backward) {
      dO = e;
      dOt = dO + d.C * d.VP;
      dpt = dOt + d.VW * d.ldC;
      st = dpt + d.C * d.ldC;
      dst = st + d.VW * d.KP;
      dq = dst + d.VW * d.KP;
      dk = dq + d.C * d.KP;
      dv = dk + d.C * d.KP;
      e = dv + d.C * d.VP;
    }
    if (gk) {
      bk = e;
      bklo = bk + d.C * d.KP;
      ek = bklo + d.C * d.KP;
      egk = ek + d.C * d.KP;
      tk = egk + d.C * d.KP;
      gam = tk + d.C * d.KP;
      e = gam + d.KP;
    }
    if (gv) {
      bv = e;
      bvlo = bv + d.C * d.VP;
      ev = bvlo + d.C * d.VP;
      egv = ev + d.C * d.VP;
      tv = egv + d.C * d.VP;
      dOs = tv + d.C * d.VP;
      gamv = dOs + d.C * d.VP;
    }
  }
};

// Per-thread double accumulators for the per-key-dim cumulative gates.
inline std::vector<double>& GkScratch(size_t K) {
  thread_local std::vector<double> acc;
  acc.resize(K);
  return acc;
}

// Loads rows [t0, t0 + nc) of the item: q, k (key head), v (value head) as f32, padded; and the
// chunk-local cumulative log gate b (0 without a gate), summed in double and kept as two floats
// (b = b + blo) so that a difference b_t - b_s of two large, close sums keeps its precision (in
// a long chunk, or after extreme gates, |b| reaches hundreds while b_t - b_s is small). Returns
// Gamma = b_{nc-1}. With gk the cumulative gates are per key dim, in bk/bklo, and it returns 0.
inline double LoadChunk(const LinearCore& c, const LinearSeq& s, int64_t h, int64_t t0, int64_t nc,
                        const Dims& d, const ChunkBufs& w) {
  const LinearArgs& a = *c.a;
  const int64_t hk = h / a.group();
  for (int64_t t = 0; t < nc; ++t) {
    const int64_t r = s.start + t0 + t;
    LoadRowF32(row_ptr(a.q, s.batch, r, hk), a.q.dtype(), d.K, w.q + t * d.KP, d.KP);
    LoadRowF32(row_ptr(a.k, s.batch, r, hk), a.k.dtype(), d.K, w.k + t * d.KP, d.KP);
    LoadRowF32(row_ptr(c.v, s.batch, r, h), c.v.dtype(), d.Vc, w.v + t * d.VP, d.VP);
  }
  if (w.bk) {
    // The per-dim kernel: bk[t][i] = the row gate summed over the chunk up to t, per key dim (a
    // scalar gate broadcast, zeros without one), as double-float pairs.
    std::vector<double>& acck = GkScratch(d.K);
    std::fill(acck.begin(), acck.end(), 0.0);
    for (int64_t t = 0; t < nc; ++t) {
      if (!LoadLogGateK(a, s, s.start + t0 + t, h, w.bk + t * d.KP))
        std::fill(w.bk + t * d.KP, w.bk + t * d.KP + d.K, 0.f);
      for (size_t i = 0; i < d.K; ++i) {
        acck[i] += std::max(w.bk[t * d.KP + i], kMinLogGate);
        w.bk[t * d.KP + i] = static_cast<float>(acck[i]);
        w.bklo[t * d.KP + i] =
            static_cast<float>(acck[i] - static_cast<double>(w.bk[t * d.KP + i]));
      }
      for (size_t i = d.K; i < d.KP; ++i) w.bk[t * d.KP + i] = w.bklo[t * d.KP + i] = 0.f;
    }
    return 0.0;
  }
  double acc = 0;
  for (size_t t = 0; t < d.C; ++t) {
    // -inf (and anything below kMinLogGate) is clamped: exp of it is 0 all the same, and the
    // cumulative sums stay finite, so b_t - b_s is never inf - inf.
    if (static_cast<int64_t>(t) < nc)
      acc += std::max(ScalarLogGate(a, s, s.start + t0 + t, h), kMinLogGate);
    w.b[t] = static_cast<float>(acc);
    w.blo[t] = static_cast<float>(acc - static_cast<double>(w.b[t]));
  }
  return acc;
}

// The mirror of LoadChunk for the backward pass: writes rows [t0, t0 + nc) of dq and dk (f32
// core buffers, one row per value head: core_row) and of dv (in its own dtype).
inline void StoreChunkGrads(const LinearCore& c, const LinearSeq& s, int64_t h, int64_t t0,
                            int64_t nc, const Dims& d, const ChunkBufs& w) {
  const LinearArgs& a = *c.a;
  for (int64_t t = 0; t < nc; ++t) {
    const int64_t row = core_row(a, s.batch, s.start + t0 + t, h);
    std::copy(w.dq + t * d.KP, w.dq + t * d.KP + d.K, c.dq + row * d.K);
    std::copy(w.dk + t * d.KP, w.dk + t * d.KP + d.K, c.dk + row * d.K);
    StoreRowF32(w.dv + t * d.VP, d.Vc, row_ptr(c.dv, s.batch, s.start + t0 + t, h), c.dv.dtype());
  }
}

// With gv: bv[t][j] = gv summed over the chunk up to t, per value column (double-float pairs;
// the padding columns stay 0).
inline void LoadColumnGates(const LinearCore& c, const LinearSeq& s, int64_t h, int64_t t0,
                            int64_t nc, const Dims& d, const ChunkBufs& w) {
  std::vector<double>& acc = GkScratch(d.Vc);
  std::fill(acc.begin(), acc.end(), 0.0);
  for (int64_t t = 0; t < nc; ++t) {
    float* row = w.bv + t * d.VP;
    LoadRowF32(row_ptr(c.gv, s.batch, s.start + t0 + t, h), c.gv.dtype(), d.Vc, row, d.VP);
    for (size_t j = 0; j < d.Vc; ++j) {
      acc[j] += std::max(row[j], kMinLogGate);
      row[j] = static_cast<float>(acc[j]);
      w.bvlo[t * d.VP + j] = static_cast<float>(acc[j] - static_cast<double>(row[j]));
    }
    for (size_t j = d.Vc; j < d.VP; ++j) row[j] = w.bvlo[t * d.VP + j] = 0.f;
  }
}

// out [width x C] = transpose of rows [n x width] (row stride ld): out[i * C + t] = rows[t][i]
// for t < ncols (0 for t >= n). Blocked 8 x 8 so both sides stay within a few cache lines.
inline void PackTransposed(const float* rows, size_t ld, int64_t n, size_t width, size_t C,
                           size_t ncols, float* out) {
  constexpr size_t kB = 8;
  for (size_t t0 = 0; t0 < ncols; t0 += kB)
    for (size_t i0 = 0; i0 < width; i0 += kB)
      for (size_t t = t0; t < std::min(t0 + kB, ncols); ++t) {
        const bool live = static_cast<int64_t>(t) < n;
        for (size_t i = i0; i < std::min(i0 + kB, width); ++i)
          out[i * C + t] = live ? rows[t * ld + i] : 0.f;
      }
}

// A^T[s][t] (s < nc rows, t < ncols columns, stride C) *= factor * exp(b_t - b_s) where s <= t
// and t < nc; 0 elsewhere (the causal mask and the chunk's tail).
inline void MaskDecay(float* at, size_t C, int64_t nc, size_t ncols, const float* b,
                      const float* blo, bool gated, float factor) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const size_t L = hn::Lanes(df);
  const auto f = hn::Set(df, factor);
  for (int64_t s = 0; s < nc; ++s) {
    float* row = at + s * C;
    const auto bs = hn::Set(df, b[s]), bslo = hn::Set(df, blo[s]);
    const auto lo = hn::Set(di, static_cast<int32_t>(s - 1)),
               hi = hn::Set(di, static_cast<int32_t>(nc));
    for (size_t t = 0; t < ncols; t += L) {
      const auto idx = hn::Iota(di, static_cast<int32_t>(t));
      const auto keep = hn::RebindMask(df, hn::And(hn::Gt(idx, lo), hn::Lt(idx, hi)));
      auto x = hn::Mul(hn::LoadU(df, row + t), f);
      if (gated) {
        // (b_t - b_s) + (blo_t - blo_s): the first difference is exact for close sums.
        const auto diff =
            hn::Add(hn::Sub(hn::LoadU(df, b + t), bs), hn::Sub(hn::LoadU(df, blo + t), bslo));
        x = hn::Mul(x, hn::Exp(df, diff));
      }
      hn::StoreU(hn::IfThenElseZero(keep, x), df, row + t);
    }
  }
}

// rows[t] *= f[t] for t < n (row length `width`, stride ld).
inline void ScaleRows(float* rows, size_t ld, int64_t n, size_t width, const float* f) {
  const hn::ScalableTag<float> df;
  for (int64_t t = 0; t < n; ++t) {
    const auto ft = hn::Set(df, f[t]);
    for (size_t j = 0; j < width; j += hn::Lanes(df))
      hn::StoreU(hn::Mul(ft, hn::LoadU(df, rows + t * ld + j)), df, rows + t * ld + j);
  }
}

// exp(b_t) and exp(Gamma - b_t) for t < nc, each times `mul`.
inline void Decays(const ChunkBufs& w, int64_t nc, double gamma, float mul, float* eb, float* eg) {
  for (int64_t t = 0; t < nc; ++t) {
    const double bt = static_cast<double>(w.b[t]) + w.blo[t];
    if (eb) eb[t] = mul * static_cast<float>(std::exp(bt));
    if (eg) eg[t] = mul * static_cast<float>(std::exp(gamma - bt));
  }
}

inline Dims MakeDims(const LinearCore& c, int64_t chunk) {
  const size_t L = hn::Lanes(hn::ScalableTag<float>());
  Dims d;
  d.C = chunk;
  d.ldC = PaddedStride(RoundUp(chunk, L));
  d.K = c.a->K;
  d.KW = RoundUp(d.K, L);
  d.KP = PaddedStride(d.KW);
  d.Vc = c.Vc;
  d.VW = RoundUp(d.Vc, L);
  d.VP = PaddedStride(d.VW);
  return d;
}

// Runs item(c, n, h, d, state, bufs) for every (sequence, value head), one per work item, with
// per-thread scratch: a K x VP state and the chunk buffers.
template <class Item>
void ForEachItemForward(const LinearCore& c, int64_t chunk, bool per_dim, Item&& item) {
  const LinearArgs& a = *c.a;
  const Dims d = MakeDims(c, chunk);
  const bool gk = per_dim, gv = c.gv.defined();
  const size_t per = RoundUp(d.K * d.VP + ChunkBufs::Floats(d, false, gk, gv), 16);
  Scratch scratch(per * num_threads());
  const int64_t items = static_cast<int64_t>(a.seqs.size()) * a.H;
  parallel_for(items, [&](int64_t it, int thread) {
    float* p = scratch.data() + per * thread;
    item(c, static_cast<size_t>(it / a.H), it % a.H, d, p,
         ChunkBufs(p + d.K * d.VP, d, false, gk, gv));
  });
}

// The same for the backward: per thread, the states entering every chunk of the longest
// sequence, dS (K x VP), and the chunk buffers.
template <class Item>
void ForEachItemBackward(const LinearCore& c, int64_t chunk, bool per_dim, Item&& item) {
  const LinearArgs& a = *c.a;
  const Dims d = MakeDims(c, chunk);
  const bool gk = per_dim, gv = c.gv.defined();
  int64_t max_chunks = 1;
  for (const LinearSeq& s : a.seqs) max_chunks = std::max(max_chunks, (s.T + chunk - 1) / chunk);
  const size_t states = static_cast<size_t>(max_chunks) * d.K * d.VP;
  const size_t per = RoundUp(states + d.K * d.VP + ChunkBufs::Floats(d, true, gk, gv), 16);
  Scratch scratch(per * num_threads());
  const int64_t items = static_cast<int64_t>(a.seqs.size()) * a.H;
  parallel_for(items, [&](int64_t it, int thread) {
    float* p = scratch.data() + per * thread;
    item(c, static_cast<size_t>(it / a.H), it % a.H, d, p, p + states,
         ChunkBufs(p + states + d.K * d.VP, d, true, gk, gv));
  });
}

}  // namespace subq::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
