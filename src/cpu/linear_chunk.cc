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
#include "src/cpu/linear_tile-inl.h"

HWY_BEFORE_NAMESPACE();
namespace subq::cpu::HWY_NAMESPACE {
namespace {

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

// Buffers of one chunk, carved from per-thread scratch.
struct ChunkBufs {
  float *q, *k, *v, *qt, *at, *o, *b, *blo, *rs;    // forward
  float *dO, *dOt, *dpt, *st, *dst, *dq, *dk, *dv;  // backward
  static size_t Floats(const Dims& d, bool backward) {
    size_t n = 2 * d.C * d.KP + 2 * d.C * d.VP + d.KW * d.ldC + d.C * d.ldC + 2 * d.C +
               std::max(d.KP, d.C);
    if (backward)
      n += d.C * d.VP + d.VW * d.ldC + d.C * d.ldC + 2 * d.VW * d.KP + 2 * d.C * d.KP + d.C * d.VP;
    return n;
  }
  ChunkBufs(float* p, const Dims& d, bool backward) {
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
    if (!backward) return;
    dO = e;
    dOt = dO + d.C * d.VP;
    dpt = dOt + d.VW * d.ldC;
    st = dpt + d.C * d.ldC;
    dst = st + d.VW * d.KP;
    dq = dst + d.VW * d.KP;
    dk = dq + d.C * d.KP;
    dv = dk + d.C * d.KP;
  }
};

// Loads rows [t0, t0 + nc) of the item: q, k (key head), v (value head) as f32, padded; and the
// chunk-local cumulative log gate b (0 without a gate), summed in double and kept as two floats
// (b = b + blo) so that a difference b_t - b_s of two large, close sums keeps its precision (in
// a long chunk, or after extreme gates, |b| reaches hundreds while b_t - b_s is small). Returns
// Gamma = b_{nc-1}.
double LoadChunk(const LinearCore& c, const LinearSeq& s, int64_t h, int64_t t0, int64_t nc,
                 const Dims& d, const ChunkBufs& w) {
  const LinearArgs& a = *c.a;
  const int64_t hk = h / a.group();
  for (int64_t t = 0; t < nc; ++t) {
    const int64_t r = s.start + t0 + t;
    LoadRowF32(row_ptr(a.q, s.batch, r, hk), a.q.dtype(), d.K, w.q + t * d.KP, d.KP);
    LoadRowF32(row_ptr(a.k, s.batch, r, hk), a.k.dtype(), d.K, w.k + t * d.KP, d.KP);
    LoadRowF32(row_ptr(c.v, s.batch, r, h), c.v.dtype(), d.Vc, w.v + t * d.VP, d.VP);
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

// out [width x C] = transpose of rows [n x width] (row stride ld): out[i * C + t] = rows[t][i]
// for t < ncols (0 for t >= n). Blocked 8 x 8 so both sides stay within a few cache lines.
void PackTransposed(const float* rows, size_t ld, int64_t n, size_t width, size_t C, size_t ncols,
                    float* out) {
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
void MaskDecay(float* at, size_t C, int64_t nc, size_t ncols, const float* b, const float* blo,
               bool gated, float factor) {
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
void ScaleRows(float* rows, size_t ld, int64_t n, size_t width, const float* f) {
  const hn::ScalableTag<float> df;
  for (int64_t t = 0; t < n; ++t) {
    const auto ft = hn::Set(df, f[t]);
    for (size_t j = 0; j < width; j += hn::Lanes(df))
      hn::StoreU(hn::Mul(ft, hn::LoadU(df, rows + t * ld + j)), df, rows + t * ld + j);
  }
}

// exp(b_t) and exp(Gamma - b_t) for t < nc, each times `mul`.
void Decays(const ChunkBufs& w, int64_t nc, double gamma, float mul, float* eb, float* eg) {
  for (int64_t t = 0; t < nc; ++t) {
    const double bt = static_cast<double>(w.b[t]) + w.blo[t];
    if (eb) eb[t] = mul * static_cast<float>(std::exp(bt));
    if (eg) eg[t] = mul * static_cast<float>(std::exp(gamma - bt));
  }
}

void ForwardItem(const LinearCore& c, size_t n, int64_t h, const Dims& d, float* S,
                 const ChunkBufs& w, std::vector<float>& tmp) {
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
                  const ChunkBufs& w, std::vector<float>& tmp) {
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
    for (int64_t t = 0; t < nc; ++t) {
      const int64_t row = core_row(a, s.batch, s.start + t0 + t, h);
      std::copy(w.dq + t * d.KP, w.dq + t * d.KP + d.K, c.dq + row * d.K);
      std::copy(w.dk + t * d.KP, w.dk + t * d.KP + d.K, c.dk + row * d.K);
      StoreRowF32(w.dv + t * d.VP, d.Vc, row_ptr(c.dv, s.batch, s.start + t0 + t, h), c.dv.dtype());
    }
  }
  StoreState(c.dh0, a, n, h, d.K, d.Vc, d.VP, dS);
}

Dims MakeDims(const LinearCore& c, int64_t chunk) {
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

void ChunkForward(const LinearCore& c, int64_t chunk) {
  const LinearArgs& a = *c.a;
  const Dims d = MakeDims(c, chunk);
  const size_t per = RoundUp(d.K * d.VP + ChunkBufs::Floats(d, false), 16);
  Scratch scratch(per * num_threads());
  const int64_t items = static_cast<int64_t>(a.seqs.size()) * a.H;
  parallel_for(items, [&](int64_t it, int thread) {
    float* p = scratch.data() + per * thread;
    thread_local std::vector<float> tmp;
    ForwardItem(c, static_cast<size_t>(it / a.H), it % a.H, d, p,
                ChunkBufs(p + d.K * d.VP, d, false), tmp);
  });
}

void ChunkBackward(const LinearCore& c, int64_t chunk) {
  const LinearArgs& a = *c.a;
  const Dims d = MakeDims(c, chunk);
  int64_t max_chunks = 1;
  for (const LinearSeq& s : a.seqs) max_chunks = std::max(max_chunks, (s.T + chunk - 1) / chunk);
  const size_t states = static_cast<size_t>(max_chunks) * d.K * d.VP;
  const size_t per = RoundUp(states + d.K * d.VP + ChunkBufs::Floats(d, true), 16);
  Scratch scratch(per * num_threads());
  const int64_t items = static_cast<int64_t>(a.seqs.size()) * a.H;
  parallel_for(items, [&](int64_t it, int thread) {
    float* p = scratch.data() + per * thread;
    thread_local std::vector<float> tmp;
    BackwardItem(c, static_cast<size_t>(it / a.H), it % a.H, d, p, p + states,
                 ChunkBufs(p + states + d.K * d.VP, d, true), tmp);
  });
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
