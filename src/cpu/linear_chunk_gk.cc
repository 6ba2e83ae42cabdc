// Linear attention, chunked form, for per-dimension gates: a per-key-dim gate gk (gla), and/or a
// value gate gv (any row gate then is handled here too, broadcast per key dim). As
// linear_chunk.cc, but the decays sit inside the q . k sum (gk) or on each value column (gv), so
// the intra-chunk products cannot be single GEMMs:
//
//   A^T[s][t] = scale * sum_i k_si q_ti exp(bk_ti - bk_si)            for s <= t   (direct)
//   o_t       = scale ((q_t o e^{bk_t}) S) o e^{bv_t} + sum_{s<=t} A_ts (v_s o e^{bv_t - bv_s})
//   S        <- diag(e^{Gk}) S diag(e^{Gv}) + (K o e^{Gk - bk})^T (V o e^{Gv - bv})
//
// Every exponent is a difference of cumulative log gates that is <= 0. The intra-chunk pairs are
// computed directly, vectorised over the key (and value) dims: C^2 (K [+ V]) exponentials per
// chunk. fla factorises the off-diagonal 16 x 16 sub-blocks into GEMMs and computes only the
// diagonal directly; that is the next optimisation here. Inter-chunk products and state passing
// are GEMM tiles.
//
// Backward, per chunk in reverse, dS the gradient of the leaving state, dO~ = scale dO o e^{bv}:
//   dA_ts = v_s . (do_t o e^{bv_t - bv_s}) (s <= t);  dv_s += sum_t A_ts do_t o e^{bv_t - bv_s}
//   dq_t += scale sum_s dA_ts (k_s o e^{bk_t - bk_s}); dk_s += scale sum_t dA_ts (q_t o e^{..})
//   dQ   += (dO~ S^T) o e^{bk};   dK += ((V o e^{Gv - bv}) dS^T) o e^{Gk - bk}
//   dV   += ((K o e^{Gk - bk}) dS) o e^{Gv - bv}
//   dS   <- diag(e^{Gk}) dS diag(e^{Gv}) + (Q o e^{bk})^T dO~
// Without gv the value side is the identity and dA, dV's intra part are GEMM tiles.
#include <algorithm>
#include <cmath>
#include <vector>

#include "src/cpu/linear_cpu.h"
#include "subq/tensor.h"
#include "subq/threads.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/cpu/linear_chunk_gk.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "src/cpu/gemm_tile-inl.h"
#include "src/cpu/linear_chunk-inl.h"

HWY_BEFORE_NAMESPACE();
namespace subq::cpu::HWY_NAMESPACE {
namespace {

using V = hn::Vec<hn::ScalableTag<float>>;

// exp(b_t - b_s) for one (t, s) pair, lanes i.., from double-float cumulative gates with row
// stride ld.
HWY_INLINE V PairDecay(const float* b, const float* blo, size_t ld, int64_t t, int64_t s,
                       size_t i) {
  const hn::ScalableTag<float> df;
  const V diff = hn::Add(hn::Sub(hn::LoadU(df, b + t * ld + i), hn::LoadU(df, b + s * ld + i)),
                         hn::Sub(hn::LoadU(df, blo + t * ld + i), hn::LoadU(df, blo + s * ld + i)));
  return hn::Exp(df, diff);
}

// e = exp(b_t), eg = exp(Gamma - b_t) per element (rows t < nc, `width` columns of stride ld),
// gam = exp(Gamma) per column (1 beyond `live`).
void ElementDecays(const float* b, const float* blo, size_t ld, size_t width, size_t live,
                   int64_t nc, float* e, float* eg, float* gam) {
  const int64_t last = nc - 1;
  for (size_t i = 0; i < width; ++i) {
    const double gamma = static_cast<double>(b[last * ld + i]) + blo[last * ld + i];
    gam[i] = i < live ? static_cast<float>(std::exp(gamma)) : 1.f;
    for (int64_t t = 0; t < nc; ++t) {
      const double bt = static_cast<double>(b[t * ld + i]) + blo[t * ld + i];
      e[t * ld + i] = static_cast<float>(std::exp(bt));
      eg[t * ld + i] = static_cast<float>(std::exp(gamma - bt));
    }
  }
}

// x[t][i] *= f[t][i] (rows t < nc, `width` columns of stride ld), optionally also * `mul`.
void MulRows(float* x, const float* f, size_t ld, size_t width, int64_t nc, float mul = 1.f) {
  const hn::ScalableTag<float> df;
  const V m = hn::Set(df, mul);
  for (int64_t t = 0; t < nc; ++t)
    for (size_t i = 0; i < width; i += hn::Lanes(df))
      hn::StoreU(hn::Mul(hn::Mul(hn::LoadU(df, x + t * ld + i), hn::LoadU(df, f + t * ld + i)), m),
                 df, x + t * ld + i);
}

// y[t][i] += x[t][i] * f[t][i].
void AddMulRows(float* y, const float* x, const float* f, size_t ld, size_t width, int64_t nc) {
  const hn::ScalableTag<float> df;
  for (int64_t t = 0; t < nc; ++t)
    for (size_t i = 0; i < width; i += hn::Lanes(df)) {
      const size_t o = t * ld + i;
      hn::StoreU(hn::MulAdd(hn::LoadU(df, x + o), hn::LoadU(df, f + o), hn::LoadU(df, y + o)), df,
                 y + o);
    }
}

// S[i][j] *= col[j] for every row (the value gate's decay of the state's columns).
void ScaleColumns(float* S, const Dims& d, const float* col) {
  for (size_t i = 0; i < d.K; ++i) MulRows(S + i * d.VP, col, 0, d.VW, 1);
}

// A^T (keys s x queries t, stride ldC) = scale * sum_i k_si q_ti exp(bk_ti - bk_si) for
// s <= t < nc; zero elsewhere up to ncols.
void IntraScores(const ChunkBufs& w, const Dims& d, int64_t nc, size_t ncols, float scale) {
  const hn::ScalableTag<float> df;
  for (int64_t s = 0; s < nc; ++s) {
    float* row = w.at + s * d.ldC;
    for (int64_t t = 0; t < static_cast<int64_t>(ncols); ++t) {
      if (t < s || t >= nc) {
        row[t] = 0.f;
        continue;
      }
      V acc = hn::Zero(df);
      for (size_t i = 0; i < d.KW; i += hn::Lanes(df))
        acc = hn::MulAdd(
            hn::Mul(hn::LoadU(df, w.k + s * d.KP + i), PairDecay(w.bk, w.bklo, d.KP, t, s, i)),
            hn::LoadU(df, w.q + t * d.KP + i), acc);
      row[t] = scale * hn::GetLane(hn::SumOfLanes(df, acc));
    }
  }
}

// Loads a chunk with its per-dim decays: row (ek, egk, gam) and, with gv, column (ev, egv,
// gamv).
void LoadChunkDecays(const LinearCore& c, const LinearSeq& s, int64_t h, int64_t t0, int64_t nc,
                     const Dims& d, const ChunkBufs& w) {
  LoadChunk(c, s, h, t0, nc, d, w);
  ElementDecays(w.bk, w.bklo, d.KP, d.KP, d.K, nc, w.ek, w.egk, w.gam);
  if (w.bv) {
    LoadColumnGates(c, s, h, t0, nc, d, w);
    ElementDecays(w.bv, w.bvlo, d.VP, d.VP, d.Vc, nc, w.ev, w.egv, w.gamv);
  }
}

void ForwardItem(const LinearCore& c, size_t n, int64_t h, const Dims& d, float* S,
                 const ChunkBufs& w) {
  const hn::ScalableTag<float> df;
  const LinearArgs& a = *c.a;
  const LinearSeq& s = a.seqs[n];
  const size_t L = hn::Lanes(df);
  const bool gv = w.bv != nullptr;
  LoadState(c.h0, a, n, h, d.K, d.Vc, d.VP, S);
  for (int64_t t0 = 0; t0 < s.T; t0 += d.C) {
    const int64_t nc = std::min<int64_t>(d.C, s.T - t0);
    const size_t ncols = RoundUp(nc, L);
    LoadChunkDecays(c, s, h, t0, nc, d, w);
    IntraScores(w, d, nc, ncols, c.scale);
    // O = scale (Q o e^{bk}) S (o e^{bv}).
    MulRows(w.q, w.ek, d.KP, d.KW, nc);
    GemmTile(nc, d.VW, d.K, w.q, d.KP, 1, S, d.VP, w.o, d.VP, TileInit::kOverwrite);
    if (gv) {
      MulRows(w.o, w.ev, d.VP, d.VW, nc, c.scale);
      // Intra, direct: o_t += sum_{s <= t} A_ts (v_s o e^{bv_t - bv_s}).
      for (int64_t t = 0; t < nc; ++t)
        for (int64_t ss = 0; ss <= t; ++ss) {
          const V at = hn::Set(df, w.at[ss * d.ldC + t]);
          for (size_t j = 0; j < d.VW; j += L) {
            float* o = w.o + t * d.VP + j;
            const V vv = hn::Mul(hn::LoadU(df, w.v + ss * d.VP + j),
                                 PairDecay(w.bv, w.bvlo, d.VP, t, ss, j));
            hn::StoreU(hn::MulAdd(at, vv, hn::LoadU(df, o)), df, o);
          }
        }
    } else {
      std::fill(w.rs, w.rs + nc, c.scale);
      GemmTile(nc, d.VW, nc, w.at, 1, d.ldC, w.v, d.VP, w.o, d.VP, TileInit::kRowScaled, w.rs);
    }
    for (int64_t t = 0; t < nc; ++t)
      StoreRowF32(w.o + t * d.VP, d.Vc, row_ptr(c.out, s.batch, s.start + t0 + t, h),
                  c.out.dtype());
    // S = diag(e^{Gk}) S diag(e^{Gv}) + (K o e^{Gk - bk})^T (V o e^{Gv - bv}).
    MulRows(w.k, w.egk, d.KP, d.KW, nc);
    if (gv) {
      ScaleColumns(S, d, w.gamv);
      MulRows(w.v, w.egv, d.VP, d.VW, nc);
    }
    GemmTile(d.K, d.VW, nc, w.k, 1, d.KP, w.v, d.VP, S, d.VP, TileInit::kRowScaled, w.gam);
  }
  StoreState(c.ht, a, n, h, d.K, d.Vc, d.VP, S);
}

void BackwardItem(const LinearCore& c, size_t n, int64_t h, const Dims& d, float* states, float* dS,
                  const ChunkBufs& w) {
  const hn::ScalableTag<float> df;
  const LinearArgs& a = *c.a;
  const LinearSeq& s = a.seqs[n];
  const size_t L = hn::Lanes(df);
  const bool gv = w.bv != nullptr;
  const int64_t nchunks = (s.T + d.C - 1) / d.C;
  const size_t SS = d.K * d.VP;

  // Forward sweep: the state entering each chunk.
  LoadState(c.h0, a, n, h, d.K, d.Vc, d.VP, states);
  for (int64_t ci = 0; ci + 1 < nchunks; ++ci) {
    const int64_t t0 = ci * d.C, nc = std::min<int64_t>(d.C, s.T - t0);
    LoadChunkDecays(c, s, h, t0, nc, d, w);
    float* S = states + (ci + 1) * SS;
    std::copy(states + ci * SS, states + (ci + 1) * SS, S);
    MulRows(w.k, w.egk, d.KP, d.KW, nc);
    if (gv) {
      ScaleColumns(S, d, w.gamv);
      MulRows(w.v, w.egv, d.VP, d.VW, nc);
    }
    GemmTile(d.K, d.VW, nc, w.k, 1, d.KP, w.v, d.VP, S, d.VP, TileInit::kRowScaled, w.gam);
  }

  LoadState(c.dht, a, n, h, d.K, d.Vc, d.VP, dS);
  for (int64_t ci = nchunks - 1; ci >= 0; --ci) {
    const int64_t t0 = ci * d.C, nc = std::min<int64_t>(d.C, s.T - t0);
    const size_t ncols = RoundUp(nc, L);
    const float* S = states + ci * SS;
    LoadChunkDecays(c, s, h, t0, nc, d, w);
    for (int64_t t = 0; t < nc; ++t)
      LoadRowF32(row_ptr(c.dout, s.batch, s.start + t0 + t, h), c.dout.dtype(), d.Vc,
                 w.dO + t * d.VP, d.VP);
    // dO~ = scale dO o e^{bv} (scale dO without gv).
    const float* dOs = w.dO;
    if (gv) {
      std::copy(w.dO, w.dO + nc * d.VP, w.dOs);
      MulRows(w.dOs, w.ev, d.VP, d.VW, nc, c.scale);
      dOs = w.dOs;
    }
    // Intra pairs. Without gv, dP^T = scale V dO^T is a GEMM tile; with gv every pair's value
    // decay differs and dA, P^T and dV's intra part are direct.
    if (!gv) {
      PackTransposed(w.dO, d.VP, nc, d.VW, d.ldC, ncols, w.dOt);
      GemmTile(nc, ncols, d.Vc, w.v, d.VP, 1, w.dOt, d.ldC, w.dpt, d.ldC, TileInit::kOverwrite);
      MaskDecay(w.dpt, d.ldC, nc, ncols, w.b, w.blo, false, c.scale);
    } else {
      std::fill(w.dv, w.dv + nc * d.VP, 0.f);
    }
    std::fill(w.dq, w.dq + nc * d.KP, 0.f);
    std::fill(w.dk, w.dk + nc * d.KP, 0.f);
    for (int64_t ss = 0; ss < nc; ++ss) {
      float* arow = w.at + ss * d.ldC;
      for (int64_t t = 0; t < static_cast<int64_t>(ncols); ++t) {
        if (t < ss || t >= nc) {
          arow[t] = 0.f;
          continue;
        }
        // A_ts (scaled) from the row decays.
        V acc = hn::Zero(df);
        for (size_t i = 0; i < d.KW; i += L)
          acc = hn::MulAdd(
              hn::Mul(hn::LoadU(df, w.k + ss * d.KP + i), PairDecay(w.bk, w.bklo, d.KP, t, ss, i)),
              hn::LoadU(df, w.q + t * d.KP + i), acc);
        const float ats = c.scale * hn::GetLane(hn::SumOfLanes(df, acc));
        arow[t] = ats;
        float dp;  // dL/d(q_t . k_s decayed), scale included
        if (gv) {
          V dacc = hn::Zero(df);
          const V va = hn::Set(df, ats);
          for (size_t j = 0; j < d.VW; j += L) {
            const V ev = PairDecay(w.bv, w.bvlo, d.VP, t, ss, j);
            const V dov = hn::Mul(hn::LoadU(df, w.dO + t * d.VP + j), ev);
            dacc = hn::MulAdd(dov, hn::LoadU(df, w.v + ss * d.VP + j), dacc);
            float* dvs = w.dv + ss * d.VP + j;
            hn::StoreU(hn::MulAdd(va, dov, hn::LoadU(df, dvs)), df, dvs);
          }
          dp = c.scale * hn::GetLane(hn::SumOfLanes(df, dacc));
        } else {
          dp = w.dpt[ss * d.ldC + t];
        }
        const V dpv = hn::Set(df, dp);
        for (size_t i = 0; i < d.KW; i += L) {
          const V e = PairDecay(w.bk, w.bklo, d.KP, t, ss, i);
          float* dqt = w.dq + t * d.KP + i;
          float* dks = w.dk + ss * d.KP + i;
          hn::StoreU(
              hn::MulAdd(dpv, hn::Mul(hn::LoadU(df, w.k + ss * d.KP + i), e), hn::LoadU(df, dqt)),
              df, dqt);
          hn::StoreU(
              hn::MulAdd(dpv, hn::Mul(hn::LoadU(df, w.q + t * d.KP + i), e), hn::LoadU(df, dks)),
              df, dks);
        }
      }
    }
    // dQ += (dO~ S^T) o e^{bk} (without gv dO~ = dO, scale folded into the e^{bk} factor).
    PackTransposed(S, d.VP, d.K, d.VW, d.KP, d.KW, w.st);  // S^T [VW x KP]
    GemmTile(nc, d.KW, d.Vc, dOs, d.VP, 1, w.st, d.KP, w.tk, d.KP, TileInit::kOverwrite);
    MulRows(w.tk, w.ek, d.KP, d.KW, nc, gv ? 1.f : c.scale);
    for (int64_t t = 0; t < nc; ++t)
      for (size_t i = 0; i < d.KW; i += L) {
        const size_t o = t * d.KP + i;
        hn::StoreU(hn::Add(hn::LoadU(df, w.dq + o), hn::LoadU(df, w.tk + o)), df, w.dq + o);
      }
    // dK += ((V o e^{Gv - bv}) dS^T) o e^{Gk - bk}.
    if (gv) MulRows(w.v, w.egv, d.VP, d.VW, nc);
    PackTransposed(dS, d.VP, d.K, d.VW, d.KP, d.KW, w.dst);
    GemmTile(nc, d.KW, d.Vc, w.v, d.VP, 1, w.dst, d.KP, w.tk, d.KP, TileInit::kOverwrite);
    AddMulRows(w.dk, w.tk, w.egk, d.KP, d.KW, nc);
    // dV: with gv, += ((K o e^{Gk - bk}) dS) o e^{Gv - bv}; without, = (K o e^{Gk - bk}) dS + P dO.
    MulRows(w.k, w.egk, d.KP, d.KW, nc);
    if (gv) {
      GemmTile(nc, d.VW, d.K, w.k, d.KP, 1, dS, d.VP, w.tv, d.VP, TileInit::kOverwrite);
      AddMulRows(w.dv, w.tv, w.egv, d.VP, d.VW, nc);
    } else {
      GemmTile(nc, d.VW, d.K, w.k, d.KP, 1, dS, d.VP, w.dv, d.VP, TileInit::kOverwrite);
      GemmTile(nc, d.VW, nc, w.at, d.ldC, 1, w.dO, d.VP, w.dv, d.VP, TileInit::kAccumulate);
    }
    // dS <- diag(e^{Gk}) dS diag(e^{Gv}) + (Q o e^{bk})^T dO~.
    if (gv) {
      ScaleColumns(dS, d, w.gamv);
      MulRows(w.q, w.ek, d.KP, d.KW, nc);
    } else {
      MulRows(w.q, w.ek, d.KP, d.KW, nc, c.scale);
    }
    GemmTile(d.K, d.VW, nc, w.q, 1, d.KP, dOs, d.VP, dS, d.VP, TileInit::kRowScaled, w.gam);
    StoreChunkGrads(c, s, h, t0, nc, d, w);
  }
  StoreState(c.dh0, a, n, h, d.K, d.Vc, d.VP, dS);
}

void ChunkGkForward(const LinearCore& c, int64_t chunk) {
  ForEachItemForward(c, chunk, true, ForwardItem);
}

void ChunkGkBackward(const LinearCore& c, int64_t chunk) {
  ForEachItemBackward(c, chunk, true, BackwardItem);
}

}  // namespace
}  // namespace subq::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace subq::cpu {

HWY_EXPORT(ChunkGkForward);
HWY_EXPORT(ChunkGkBackward);

void linear_chunk_gk_forward(const LinearCore& c, int64_t chunk) {
  HWY_DYNAMIC_DISPATCH(ChunkGkForward)(c, chunk);
}
void linear_chunk_gk_backward(const LinearCore& c, int64_t chunk) {
  HWY_DYNAMIC_DISPATCH(ChunkGkBackward)(c, chunk);
}

}  // namespace subq::cpu
#endif
