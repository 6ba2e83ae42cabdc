// Linear attention, chunked form, for a per-key-dim gate gk (gla). As linear_chunk.cc, but the
// decay is per key dim, inside the q . k product, so the intra-chunk score can not be one GEMM:
//
//   A^T[s][t] = scale * sum_i k_si q_ti exp(b_ti - b_si)   for s <= t      (direct, C^2 K exps)
//   O         = scale (Q o exp(b)) S + A V
//   S        <- diag(exp(Gamma)) S + (K o exp(Gamma - b))^T V
//
// Every exponent is a difference of cumulative log gates that is <= 0. The intra-chunk pairs are
// computed directly, vectorised over the key dim (fla factorises off-diagonal 16 x 16 sub-blocks
// into GEMMs and computes only the diagonal directly; that is the next optimisation here). The
// inter-chunk products and the state passing are GEMM tiles.
//
// Backward, per chunk in reverse with dS the gradient of the leaving state:
//   dP^T[s][t] = scale v_s . do_t (s <= t)
//   dq_t += sum_s dP_ts (k_s o exp(b_t - b_s)),  dk_s += sum_t dP_ts (q_t o exp(b_t - b_s))
//   dQ   += scale (dO S^T) o exp(b);              dK  += (V dS^T) o exp(Gamma - b)
//   dV    = (K o exp(Gamma - b)) dS + P dO;       dS <- diag(exp(Gamma)) dS + scale (Q o exp(b))^T
//   dO
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

// exp(b_t - b_s) for one (t, s) pair, lanes i0.., from the double-float cumulative gates.
HWY_INLINE V PairDecay(const ChunkBufs& w, const Dims& d, int64_t t, int64_t s, size_t i) {
  const hn::ScalableTag<float> df;
  const float *bt = w.bk + t * d.KP + i, *bs = w.bk + s * d.KP + i;
  const float *lt = w.bklo + t * d.KP + i, *ls = w.bklo + s * d.KP + i;
  const V diff = hn::Add(hn::Sub(hn::LoadU(df, bt), hn::LoadU(df, bs)),
                         hn::Sub(hn::LoadU(df, lt), hn::LoadU(df, ls)));
  return hn::Exp(df, diff);
}

// ek = exp(b_t), egk = exp(Gamma - b_t) per element (rows t < nc), gam = exp(Gamma) per key dim.
void ElementDecays(const ChunkBufs& w, const Dims& d, int64_t nc) {
  const int64_t last = nc - 1;
  for (size_t i = 0; i < d.KP; ++i) {
    const double gamma = static_cast<double>(w.bk[last * d.KP + i]) + w.bklo[last * d.KP + i];
    w.gam[i] = i < d.K ? static_cast<float>(std::exp(gamma)) : 1.f;
    for (int64_t t = 0; t < nc; ++t) {
      const double bt = static_cast<double>(w.bk[t * d.KP + i]) + w.bklo[t * d.KP + i];
      w.ek[t * d.KP + i] = static_cast<float>(std::exp(bt));
      w.egk[t * d.KP + i] = static_cast<float>(std::exp(gamma - bt));
    }
  }
}

// x[t][i] *= f[t][i] for rows t < nc, width KW.
void MulRows(float* x, const float* f, const Dims& d, int64_t nc) {
  const hn::ScalableTag<float> df;
  for (int64_t t = 0; t < nc; ++t)
    for (size_t i = 0; i < d.KW; i += hn::Lanes(df))
      hn::StoreU(hn::Mul(hn::LoadU(df, x + t * d.KP + i), hn::LoadU(df, f + t * d.KP + i)), df,
                 x + t * d.KP + i);
}

// A^T (keys s x queries t, stride ldC) = scale * sum_i k_si q_ti exp(b_ti - b_si) for s <= t < nc;
// zero elsewhere up to ncols.
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
        acc = hn::MulAdd(hn::Mul(hn::LoadU(df, w.k + s * d.KP + i), PairDecay(w, d, t, s, i)),
                         hn::LoadU(df, w.q + t * d.KP + i), acc);
      row[t] = scale * hn::GetLane(hn::SumOfLanes(df, acc));
    }
  }
}

void ForwardItem(const LinearCore& c, size_t n, int64_t h, const Dims& d, float* S,
                 const ChunkBufs& w) {
  const LinearArgs& a = *c.a;
  const LinearSeq& s = a.seqs[n];
  const size_t L = hn::Lanes(hn::ScalableTag<float>());
  LoadState(c.h0, a, n, h, d.K, d.Vc, d.VP, S);
  for (int64_t t0 = 0; t0 < s.T; t0 += d.C) {
    const int64_t nc = std::min<int64_t>(d.C, s.T - t0);
    const size_t ncols = RoundUp(nc, L);
    LoadChunk(c, s, h, t0, nc, d, w);
    ElementDecays(w, d, nc);
    IntraScores(w, d, nc, ncols, c.scale);
    // O = Q~ S with Q~ = Q o exp(b), then O = scale O + A V.
    MulRows(w.q, w.ek, d, nc);
    GemmTile(nc, d.VW, d.K, w.q, d.KP, 1, S, d.VP, w.o, d.VP, TileInit::kOverwrite);
    std::fill(w.rs, w.rs + nc, c.scale);
    GemmTile(nc, d.VW, nc, w.at, 1, d.ldC, w.v, d.VP, w.o, d.VP, TileInit::kRowScaled, w.rs);
    for (int64_t t = 0; t < nc; ++t)
      StoreRowF32(w.o + t * d.VP, d.Vc, row_ptr(c.out, s.batch, s.start + t0 + t, h),
                  c.out.dtype());
    // S = diag(exp(Gamma)) S + (K o exp(Gamma - b))^T V.
    MulRows(w.k, w.egk, d, nc);
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
  const int64_t nchunks = (s.T + d.C - 1) / d.C;
  const size_t SS = d.K * d.VP;

  // Forward sweep: the state entering each chunk.
  LoadState(c.h0, a, n, h, d.K, d.Vc, d.VP, states);
  for (int64_t ci = 0; ci + 1 < nchunks; ++ci) {
    const int64_t t0 = ci * d.C, nc = std::min<int64_t>(d.C, s.T - t0);
    LoadChunk(c, s, h, t0, nc, d, w);
    ElementDecays(w, d, nc);
    float* S = states + (ci + 1) * SS;
    std::copy(states + ci * SS, states + (ci + 1) * SS, S);
    MulRows(w.k, w.egk, d, nc);
    GemmTile(d.K, d.VW, nc, w.k, 1, d.KP, w.v, d.VP, S, d.VP, TileInit::kRowScaled, w.gam);
  }

  LoadState(c.dht, a, n, h, d.K, d.Vc, d.VP, dS);
  for (int64_t ci = nchunks - 1; ci >= 0; --ci) {
    const int64_t t0 = ci * d.C, nc = std::min<int64_t>(d.C, s.T - t0);
    const size_t ncols = RoundUp(nc, L);
    const float* S = states + ci * SS;
    LoadChunk(c, s, h, t0, nc, d, w);
    ElementDecays(w, d, nc);
    for (int64_t t = 0; t < nc; ++t)
      LoadRowF32(row_ptr(c.dout, s.batch, s.start + t0 + t, h), c.dout.dtype(), d.Vc,
                 w.dO + t * d.VP, d.VP);
    // dP^T = scale V dO^T, causal mask, no decay (it sits inside the q . k sum).
    PackTransposed(w.dO, d.VP, nc, d.VW, d.ldC, ncols, w.dOt);
    GemmTile(nc, ncols, d.Vc, w.v, d.VP, 1, w.dOt, d.ldC, w.dpt, d.ldC, TileInit::kOverwrite);
    MaskDecay(w.dpt, d.ldC, nc, ncols, w.b, w.blo, false, c.scale);
    // Intra pairs: P^T (for dV), and the direct dq, dk sums.
    std::fill(w.dq, w.dq + nc * d.KP, 0.f);
    std::fill(w.dk, w.dk + nc * d.KP, 0.f);
    for (int64_t ss = 0; ss < nc; ++ss) {
      float* arow = w.at + ss * d.ldC;
      for (int64_t t = 0; t < static_cast<int64_t>(ncols); ++t) {
        if (t < ss || t >= nc) {
          arow[t] = 0.f;
          continue;
        }
        const V dp = hn::Set(df, w.dpt[ss * d.ldC + t]);
        V acc = hn::Zero(df);
        for (size_t i = 0; i < d.KW; i += L) {
          const V e = PairDecay(w, d, t, ss, i);
          const V ke = hn::Mul(hn::LoadU(df, w.k + ss * d.KP + i), e);
          const V qe = hn::Mul(hn::LoadU(df, w.q + t * d.KP + i), e);
          acc = hn::MulAdd(ke, hn::LoadU(df, w.q + t * d.KP + i), acc);
          float* dqt = w.dq + t * d.KP + i;
          float* dks = w.dk + ss * d.KP + i;
          hn::StoreU(hn::MulAdd(dp, ke, hn::LoadU(df, dqt)), df, dqt);
          hn::StoreU(hn::MulAdd(dp, qe, hn::LoadU(df, dks)), df, dks);
        }
        arow[t] = c.scale * hn::GetLane(hn::SumOfLanes(df, acc));
      }
    }
    // dQ += scale (dO S^T) o exp(b): the product into tk, then scaled and added.
    PackTransposed(S, d.VP, d.K, d.VW, d.KP, d.KW, w.st);  // S^T [VW x KP]
    GemmTile(nc, d.KW, d.Vc, w.dO, d.VP, 1, w.st, d.KP, w.tk, d.KP, TileInit::kOverwrite);
    for (int64_t t = 0; t < nc; ++t)
      for (size_t i = 0; i < d.KW; i += L) {
        const size_t o = t * d.KP + i;
        const V add = hn::Mul(hn::Mul(hn::LoadU(df, w.tk + o), hn::LoadU(df, w.ek + o)),
                              hn::Set(df, c.scale));
        hn::StoreU(hn::Add(hn::LoadU(df, w.dq + o), add), df, w.dq + o);
      }
    // dK += (V dS^T) o exp(Gamma - b).
    PackTransposed(dS, d.VP, d.K, d.VW, d.KP, d.KW, w.dst);
    GemmTile(nc, d.KW, d.Vc, w.v, d.VP, 1, w.dst, d.KP, w.tk, d.KP, TileInit::kOverwrite);
    for (int64_t t = 0; t < nc; ++t)
      for (size_t i = 0; i < d.KW; i += L) {
        const size_t o = t * d.KP + i;
        const V add = hn::Mul(hn::LoadU(df, w.tk + o), hn::LoadU(df, w.egk + o));
        hn::StoreU(hn::Add(hn::LoadU(df, w.dk + o), add), df, w.dk + o);
      }
    // dV = (K o exp(Gamma - b)) dS + P dO.
    MulRows(w.k, w.egk, d, nc);
    GemmTile(nc, d.VW, d.K, w.k, d.KP, 1, dS, d.VP, w.dv, d.VP, TileInit::kOverwrite);
    GemmTile(nc, d.VW, nc, w.at, d.ldC, 1, w.dO, d.VP, w.dv, d.VP, TileInit::kAccumulate);
    // dS <- diag(exp(Gamma)) dS + scale (Q o exp(b))^T dO.
    MulRows(w.q, w.ek, d, nc);
    for (int64_t t = 0; t < nc; ++t)
      for (size_t i = 0; i < d.KW; ++i) w.q[t * d.KP + i] *= c.scale;
    GemmTile(d.K, d.VW, nc, w.q, 1, d.KP, w.dO, d.VP, dS, d.VP, TileInit::kRowScaled, w.gam);
    for (int64_t t = 0; t < nc; ++t) {
      const int64_t row = core_row(a, s.batch, s.start + t0 + t, h);
      std::copy(w.dq + t * d.KP, w.dq + t * d.KP + d.K, c.dq + row * d.K);
      std::copy(w.dk + t * d.KP, w.dk + t * d.KP + d.K, c.dk + row * d.K);
      StoreRowF32(w.dv + t * d.VP, d.Vc, row_ptr(c.dv, s.batch, s.start + t0 + t, h), c.dv.dtype());
    }
  }
  StoreState(c.dh0, a, n, h, d.K, d.Vc, d.VP, dS);
}

void ChunkGkForward(const LinearCore& c, int64_t chunk) {
  ForEachItemForward(c, chunk, ForwardItem);
}

void ChunkGkBackward(const LinearCore& c, int64_t chunk) {
  ForEachItemBackward(c, chunk, BackwardItem);
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
