// Linear attention, chunked form, for scalar gates (none, g, g_gamma): linear_attention,
// simple_gla (Mamba-2/SSD), RetNet. Splits T into chunks of C; with b_t the cumulative log
// gate inside the chunk (<= 0) and Gamma = b_{C-1}, per chunk:
//
//   A^T  = K Q^T, then A^T[s][t] *= exp(b_t - b_s) for s <= t, else 0     (intra, C x C)
//   O    = (Q o exp(b)) S  +  A V                                         (inter + intra)
//   S   <- exp(Gamma) S + K^T (V o exp(Gamma - b))                        (state passing)
//
// Every exponent is a difference of cumulative log gates that is <= 0, so nothing overflows
// however extreme the gates. All products are GEMM tiles (gemm_tile-inl.h); the score tile is
// kept transposed (keys x queries) as in the attention kernels, so Q^T is packed once per chunk
// and nothing else is transposed. Work item = (sequence, value head); chunks run in order.
//
// Backward: a forward sweep stores the state entering each chunk; a reverse sweep carries dS:
//   P^T  = (A o M)^T scale           dP^T = scale (V dO^T) o M^T
//   dQ   = scale (dO S^T) o exp(b) + dP K
//   dK   = (V dS^T) o exp(Gamma - b) + dP^T Q
//   dV   = (K o exp(Gamma - b)) dS + P dO
//   dS  <- exp(Gamma) dS + scale (Q o exp(b))^T dO
// where dS is the gradient of the state leaving the chunk.
#include <algorithm>
#include <cmath>
#include <vector>

#include "src/cpu/linear_cpu.h"
#include "subq/tensor.h"
#include "subq/threads.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/cpu/linear_chunk.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "src/cpu/gemm_tile-inl.h"
#include "src/cpu/linear_chunk-inl.h"

HWY_BEFORE_NAMESPACE();
namespace subq::cpu::HWY_NAMESPACE {
namespace {

void ForwardItem(const LinearCore& c, size_t n, int64_t h, const Dims& d, float* S,
                 const ChunkBufs& w) {
  thread_local std::vector<float> tmp;
  const LinearArgs& a = *c.a;
  const LinearSeq& s = a.seqs[n];
  const size_t L = hn::Lanes(hn::ScalableTag<float>());
  const bool gated = a.gate != GateKind::kNone;
  LoadState(c.h0, a, n, h, d.K, d.Vc, d.VP, S);
  tmp.resize(2 * d.C);
  float *eb = tmp.data(), *eg = tmp.data() + d.C;
  for (int64_t t0 = 0; t0 < s.T; t0 += d.C) {
    const int64_t nc = std::min<int64_t>(d.C, s.T - t0);
    const size_t ncols = RoundUp(nc, L);
    const double gamma = LoadChunk(c, s, h, t0, nc, d, w);
    // Intra: A^T = scale K Q^T, masked and decayed.
    PackTransposed(w.q, d.KP, nc, d.K, d.ldC, ncols, w.qt);
    GemmTile(nc, ncols, d.K, w.k, d.KP, 1, w.qt, d.ldC, w.at, d.ldC, TileInit::kOverwrite);
    MaskDecay(w.at, d.ldC, nc, ncols, w.b, w.blo, gated, c.scale);
    // O = Q S, then O = diag(scale exp(b)) O + A V in one tile (A read through A^T: a_rs = 1,
    // a_cs = C), so neither Q nor O needs a scaling pass.
    if (gated) {
      Decays(w, nc, gamma, c.scale, eb, nullptr);
      Decays(w, nc, gamma, 1.f, nullptr, eg);
    } else {
      std::fill(eb, eb + nc, c.scale);
    }
    GemmTile(nc, d.VW, d.K, w.q, d.KP, 1, S, d.VP, w.o, d.VP, TileInit::kOverwrite);
    GemmTile(nc, d.VW, nc, w.at, 1, d.ldC, w.v, d.VP, w.o, d.VP, TileInit::kRowScaled, eb);
    for (int64_t t = 0; t < nc; ++t)
      StoreRowF32(w.o + t * d.VP, d.Vc, row_ptr(c.out, s.batch, s.start + t0 + t, h),
                  c.out.dtype());
    // State: S = exp(Gamma) S + (K o exp(Gamma - b))^T V; K is not needed any more, so it is
    // scaled in place.
    if (gated) ScaleRows(w.k, d.KP, nc, d.KW, eg);
    std::fill(w.rs, w.rs + d.K, gated ? static_cast<float>(std::exp(gamma)) : 1.f);
    GemmTile(d.K, d.VW, nc, w.k, 1, d.KP, w.v, d.VP, S, d.VP, TileInit::kRowScaled, w.rs);
  }
  StoreState(c.ht, a, n, h, d.K, d.Vc, d.VP, S);
}

void BackwardItem(const LinearCore& c, size_t n, int64_t h, const Dims& d, float* states, float* dS,
                  const ChunkBufs& w) {
  thread_local std::vector<float> tmp;
  const LinearArgs& a = *c.a;
  const LinearSeq& s = a.seqs[n];
  const size_t L = hn::Lanes(hn::ScalableTag<float>());
  const bool gated = a.gate != GateKind::kNone;
  const int64_t nchunks = (s.T + d.C - 1) / d.C;
  const size_t SS = d.K * d.VP;
  tmp.resize(3 * d.C);
  float *eb = tmp.data(), *eg = tmp.data() + d.C, *ebs = tmp.data() + 2 * d.C;

  // Forward sweep: the state entering each chunk.
  LoadState(c.h0, a, n, h, d.K, d.Vc, d.VP, states);
  for (int64_t ci = 0; ci + 1 < nchunks; ++ci) {
    const int64_t t0 = ci * d.C, nc = std::min<int64_t>(d.C, s.T - t0);
    const double gamma = LoadChunk(c, s, h, t0, nc, d, w);
    float* S = states + (ci + 1) * SS;
    std::copy(states + ci * SS, states + (ci + 1) * SS, S);
    if (gated) {
      Decays(w, nc, gamma, 1.f, nullptr, eg);
      ScaleRows(w.k, d.KP, nc, d.KW, eg);
    }
    std::fill(w.rs, w.rs + d.K, gated ? static_cast<float>(std::exp(gamma)) : 1.f);
    GemmTile(d.K, d.VW, nc, w.k, 1, d.KP, w.v, d.VP, S, d.VP, TileInit::kRowScaled, w.rs);
  }

  // Reverse sweep.
  LoadState(c.dht, a, n, h, d.K, d.Vc, d.VP, dS);
  for (int64_t ci = nchunks - 1; ci >= 0; --ci) {
    const int64_t t0 = ci * d.C, nc = std::min<int64_t>(d.C, s.T - t0);
    const size_t ncols = RoundUp(nc, L);
    const float* S = states + ci * SS;
    const double gamma = LoadChunk(c, s, h, t0, nc, d, w);
    for (int64_t t = 0; t < nc; ++t)
      LoadRowF32(row_ptr(c.dout, s.batch, s.start + t0 + t, h), c.dout.dtype(), d.Vc,
                 w.dO + t * d.VP, d.VP);
    if (gated) {
      Decays(w, nc, gamma, 1.f, eb, eg);
      for (int64_t t = 0; t < nc; ++t) ebs[t] = c.scale * eb[t];
    } else {
      std::fill(eb, eb + nc, 1.f);
      std::fill(eg, eg + nc, 1.f);
      std::fill(ebs, ebs + nc, c.scale);
    }
    // P^T = scale (A o M)^T and dP^T = scale (V dO^T) o M^T.
    PackTransposed(w.q, d.KP, nc, d.K, d.ldC, ncols, w.qt);
    GemmTile(nc, ncols, d.K, w.k, d.KP, 1, w.qt, d.ldC, w.at, d.ldC, TileInit::kOverwrite);
    MaskDecay(w.at, d.ldC, nc, ncols, w.b, w.blo, gated, c.scale);
    PackTransposed(w.dO, d.VP, nc, d.VW, d.ldC, ncols, w.dOt);
    GemmTile(nc, ncols, d.Vc, w.v, d.VP, 1, w.dOt, d.ldC, w.dpt, d.ldC, TileInit::kOverwrite);
    MaskDecay(w.dpt, d.ldC, nc, ncols, w.b, w.blo, gated, c.scale);
    // dQ = scale (dO S^T) o exp(b) + dP K.
    PackTransposed(S, d.VP, d.K, d.VW, d.KP, d.KW, w.st);  // S^T [VP x KP]
    GemmTile(nc, d.KW, d.Vc, w.dO, d.VP, 1, w.st, d.KP, w.dq, d.KP, TileInit::kOverwrite);
    GemmTile(nc, d.KW, nc, w.dpt, 1, d.ldC, w.k, d.KP, w.dq, d.KP, TileInit::kRowScaled, ebs);
    // dK = (V dS^T) o exp(Gamma - b) + dP^T Q (Q unscaled here).
    PackTransposed(dS, d.VP, d.K, d.VW, d.KP, d.KW, w.dst);  // dS^T [VP x KP]
    GemmTile(nc, d.KW, d.Vc, w.v, d.VP, 1, w.dst, d.KP, w.dk, d.KP, TileInit::kOverwrite);
    GemmTile(nc, d.KW, nc, w.dpt, d.ldC, 1, w.q, d.KP, w.dk, d.KP, TileInit::kRowScaled, eg);
    // dV = (K o exp(Gamma - b)) dS + P dO.
    ScaleRows(w.k, d.KP, nc, d.KW, eg);
    GemmTile(nc, d.VW, d.K, w.k, d.KP, 1, dS, d.VP, w.dv, d.VP, TileInit::kOverwrite);
    GemmTile(nc, d.VW, nc, w.at, d.ldC, 1, w.dO, d.VP, w.dv, d.VP, TileInit::kAccumulate);
    // dS <- exp(Gamma) dS + scale (Q o exp(b))^T dO.
    ScaleRows(w.q, d.KP, nc, d.KW, ebs);
    std::fill(w.rs, w.rs + d.K, gated ? static_cast<float>(std::exp(gamma)) : 1.f);
    GemmTile(d.K, d.VW, nc, w.q, 1, d.KP, w.dO, d.VP, dS, d.VP, TileInit::kRowScaled, w.rs);
    StoreChunkGrads(c, s, h, t0, nc, d, w);
  }
  StoreState(c.dh0, a, n, h, d.K, d.Vc, d.VP, dS);
}

void ChunkForward(const LinearCore& c, int64_t chunk) {
  ForEachItemForward(c, chunk, false, ForwardItem);
}

void ChunkBackward(const LinearCore& c, int64_t chunk) {
  ForEachItemBackward(c, chunk, false, BackwardItem);
}

}  // namespace
}  // namespace subq::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace subq::cpu {

HWY_EXPORT(ChunkForward);
HWY_EXPORT(ChunkBackward);

void linear_chunk_forward(const LinearCore& c, int64_t chunk) {
  HWY_DYNAMIC_DISPATCH(ChunkForward)(c, chunk);
}
void linear_chunk_backward(const LinearCore& c, int64_t chunk) {
  HWY_DYNAMIC_DISPATCH(ChunkBackward)(c, chunk);
}

}  // namespace subq::cpu
#endif
