// Causal depthwise short convolution on the CPU, vectorised along the channels (which are
// contiguous: [B, T, D] channels-last), with the weights transposed once to [W x D] so each tap
// is a vector of per-channel weights.
//
// Work item = (sequence, block of kBlock rows). An item converts its rows plus the W - 1 before
// them (from x or the initial state) to f32 once, then every output row is W fused
// multiply-adds per vector. The backward recomputes the pre-activation (for SiLU), forms
// du = dout * silu'(u) for its rows plus the W - 1 after them, and gathers
//   dx_p = sum_j w_j o du_{p + W - 1 - j}   (+ dht for the last W - 1 inputs)
// per item; dweight and dbias are per-item partial sums reduced in double at the end, so the
// result does not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "src/cpu/conv_cpu.h"
#include "subq/tensor.h"
#include "subq/threads.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/cpu/conv.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "src/cpu/rows-inl.h"

HWY_BEFORE_NAMESPACE();
namespace subq::cpu::HWY_NAMESPACE {
namespace {

using detail::conv_row;
using detail::ConvArgs;
using detail::ConvSeq;

// Rows per work item: large enough that the W - 1 rows of history it recomputes are noise,
// small enough that 2 threads get many items at T = 4096.
constexpr int64_t kBlock = 256;

struct Item {
  size_t seq;
  int64_t t0, nt;
};

std::vector<Item> MakeItems(const ConvArgs& a) {
  std::vector<Item> items;
  for (size_t n = 0; n < a.seqs.size(); ++n) {
    for (int64_t t0 = 0; t0 < a.seqs[n].T; t0 += kBlock)
      items.push_back({n, t0, std::min(kBlock, a.seqs[n].T - t0)});
    // An empty sequence still owns its initial state's gradient (its final state is its
    // initial state).
    if (a.seqs[n].T == 0) items.push_back({n, 0, 0});
  }
  return items;
}

// wt [W x DP] = weight^T; bias [DP] (zeros without bias).
void PrepareWeights(const ConvArgs& a, size_t DP, float* wt, float* bias) {
  for (int64_t j = 0; j < a.W; ++j)
    for (size_t d = 0; d < DP; ++d)
      wt[j * DP + d] = static_cast<int64_t>(d) < a.D
                           ? static_cast<float>(
                                 load_at(a.weight, d * a.weight.stride(0) + j * a.weight.stride(1)))
                           : 0.f;
  for (size_t d = 0; d < DP; ++d)
    bias[d] = a.bias.defined() && static_cast<int64_t>(d) < a.D
                  ? static_cast<float>(load_at(a.bias, d * a.bias.stride(0)))
                  : 0.f;
}

// Inputs at positions [p0, p0 + n) of sequence `seq` as f32 rows of DP (zero-padded); positions
// below 0 read the initial state, or zeros; positions >= T are zeros.
void LoadInputs(const ConvArgs& a, size_t seq, int64_t p0, int64_t n, size_t DP, float* dst) {
  const ConvSeq& s = a.seqs[seq];
  for (int64_t i = 0; i < n; ++i) {
    const int64_t p = p0 + i;
    float* row = dst + i * DP;
    if (p >= 0 && p < s.T) {
      LoadRowF32(conv_row(a.x, s.batch, s.start + p), a.x.dtype(), a.D, row, DP);
    } else if (p < 0 && a.h0.defined()) {
      LoadRowF32(conv_row(a.h0, static_cast<int64_t>(seq), a.W - 1 + p), DType::kF32, a.D, row, DP);
    } else {
      std::fill(row, row + DP, 0.f);
    }
  }
}

using V = hn::Vec<hn::ScalableTag<float>>;

// u = bias + sum_j w_j o in[j] for one row, vector at d; `in` points at the oldest of the W rows.
HWY_INLINE V PreAct(const float* wt, const float* bias, const float* in, size_t DP, int64_t W,
                    size_t d) {
  const hn::ScalableTag<float> df;
  V u = hn::LoadU(df, bias + d);
  for (int64_t j = 0; j < W; ++j)
    u = hn::MulAdd(hn::LoadU(df, wt + j * DP + d), hn::LoadU(df, in + j * DP + d), u);
  return u;
}

HWY_INLINE V Sigmoid(V u) {
  const hn::ScalableTag<float> df;
  const V one = hn::Set(df, 1.f);
  return hn::Div(one, hn::Add(one, hn::Exp(df, hn::Neg(u))));
}

void Forward(const ConvArgs& a) {
  const hn::ScalableTag<float> df;
  const size_t L = hn::Lanes(df), DP = RoundUp(a.D, L);
  std::vector<float> wt(a.W * DP), bias(DP);
  PrepareWeights(a, DP, wt.data(), bias.data());
  const std::vector<Item> items = MakeItems(a);
  const size_t per = RoundUp((kBlock + a.W) * DP + DP, 16);
  Scratch scratch(per * num_threads());
  parallel_for(static_cast<int64_t>(items.size()), [&](int64_t i, int thread) {
    const Item& it = items[i];
    const ConvSeq& s = a.seqs[it.seq];
    float* in = scratch.data() + per * thread;  // rows t0 - W + 1 .. t0 + nt - 1
    float* y = in + (kBlock + a.W) * DP;
    LoadInputs(a, it.seq, it.t0 - a.W + 1, it.nt + a.W - 1, DP, in);
    for (int64_t t = 0; t < it.nt; ++t) {
      for (size_t d = 0; d < DP; d += L) {
        V u = PreAct(wt.data(), bias.data(), in + t * DP, DP, a.W, d);
        if (a.silu) u = hn::Mul(u, Sigmoid(u));
        hn::StoreU(u, df, y + d);
      }
      StoreRowF32(y, a.D, conv_row(a.out, s.batch, s.start + it.t0 + t), a.out.dtype());
    }
  });
  // Final states: the last W - 1 inputs of each sequence (after the outputs, so an in-place
  // update may alias initial and final state: rows are read before they are overwritten, in
  // ascending order).
  if (a.ht.defined()) {
    std::vector<float> rows((a.W - 1) * DP + 1);
    for (size_t n = 0; n < a.seqs.size(); ++n) {
      LoadInputs(a, n, a.seqs[n].T - (a.W - 1), a.W - 1, DP, rows.data());
      for (int64_t i = 0; i < a.W - 1; ++i)
        StoreRowF32(rows.data() + i * DP, a.D, conv_row(a.ht, static_cast<int64_t>(n), i),
                    DType::kF32);
    }
  }
}

void Backward(const ConvArgs& a) {
  const hn::ScalableTag<float> df;
  const size_t L = hn::Lanes(df), DP = RoundUp(a.D, L);
  const auto& g = a.grads;
  const int64_t W = a.W;
  std::vector<float> wt(W * DP), bias(DP);
  PrepareWeights(a, DP, wt.data(), bias.data());
  const std::vector<Item> items = MakeItems(a);
  // Per item: inputs for rows t0 - 2(W - 1) .. t0 + nt + W - 2 (u needs W - 1 before each of
  // the du rows), du rows t0 .. t0 + nt + W - 2, a dx row, and the dweight/dbias partials.
  const size_t in_rows = kBlock + 3 * W, du_rows = kBlock + W;
  const size_t per = RoundUp(in_rows * DP + du_rows * DP + DP, 16);
  Scratch scratch(per * num_threads());
  std::vector<float> partial(items.size() * (W + 1) * DP, 0.f);
  parallel_for(static_cast<int64_t>(items.size()), [&](int64_t i, int thread) {
    const Item& it = items[i];
    const ConvSeq& s = a.seqs[it.seq];
    const auto n = static_cast<int64_t>(it.seq);
    float* in = scratch.data() + per * thread;
    float* du = in + in_rows * DP;
    float* dx = du + du_rows * DP;
    float* pw = partial.data() + static_cast<size_t>(i) * (W + 1) * DP;  // W taps, then bias
    // Positions p this item writes dx for: [p0, p1); the first block also owns the initial
    // state's positions [-(W - 1), 0).
    const int64_t p0 = it.t0 == 0 ? -(W - 1) : it.t0, p1 = it.t0 + it.nt;
    // du for t in [max(p0, 0), min(p1 + W - 1, T)), computed from inputs t - W + 1 .. t.
    const int64_t u0 = std::max<int64_t>(p0, 0), u1 = std::min(p1 + W - 1, s.T);
    const int64_t in0 = u0 - (W - 1);
    LoadInputs(a, it.seq, in0, u1 - in0, DP, in);
    for (int64_t t = u0; t < u1; ++t) {
      const float* xin = in + (t - W + 1 - in0) * DP;
      float* drow = du + (t - u0) * DP;
      LoadRowF32(conv_row(a.dout, s.batch, s.start + t), a.dout.dtype(), a.D, drow, DP);
      for (size_t d = 0; d < DP; d += L) {
        V dv = hn::LoadU(df, drow + d);
        if (a.silu) {  // d silu(u)/du = sig(u) (1 + u (1 - sig(u)))
          const V u = PreAct(wt.data(), bias.data(), xin, DP, W, d);
          const V sg = Sigmoid(u);
          const V one = hn::Set(df, 1.f);
          dv = hn::Mul(dv, hn::Mul(sg, hn::MulAdd(u, hn::Sub(one, sg), one)));
        }
        hn::StoreU(dv, df, drow + d);
      }
      // dweight_j += du_t o x_{t - W + 1 + j}, dbias += du_t: only for this item's own rows.
      if (t >= it.t0 && t < it.t0 + it.nt) {
        for (int64_t j = 0; j < W; ++j)
          for (size_t d = 0; d < DP; d += L)
            hn::StoreU(hn::MulAdd(hn::LoadU(df, drow + d), hn::LoadU(df, xin + j * DP + d),
                                  hn::LoadU(df, pw + j * DP + d)),
                       df, pw + j * DP + d);
        for (size_t d = 0; d < DP; d += L)
          hn::StoreU(hn::Add(hn::LoadU(df, pw + W * DP + d), hn::LoadU(df, drow + d)), df,
                     pw + W * DP + d);
      }
    }
    // dx_p = sum_j w_j o du_{p + W - 1 - j} over t in [0, T), plus dht for the final state.
    std::vector<float> dht_row(DP);
    for (int64_t p = p0; p < p1; ++p) {
      for (size_t d = 0; d < DP; d += L) hn::StoreU(hn::Zero(df), df, dx + d);
      for (int64_t j = 0; j < W; ++j) {
        const int64_t t = p + W - 1 - j;
        if (t < u0 || t >= u1) continue;
        const float* drow = du + (t - u0) * DP;
        for (size_t d = 0; d < DP; d += L)
          hn::StoreU(hn::MulAdd(hn::LoadU(df, wt.data() + j * DP + d), hn::LoadU(df, drow + d),
                                hn::LoadU(df, dx + d)),
                     df, dx + d);
      }
      const int64_t fi = p - (s.T - (W - 1));  // index in the final state
      if (a.dht.defined() && fi >= 0) {
        LoadRowF32(conv_row(a.dht, n, fi), a.dht.dtype(), a.D, dht_row.data(), DP);
        for (size_t d = 0; d < DP; d += L)
          hn::StoreU(hn::Add(hn::LoadU(df, dx + d), hn::LoadU(df, dht_row.data() + d)), df, dx + d);
      }
      if (p >= 0) {
        StoreRowF32(dx, a.D, conv_row(g.dx, s.batch, s.start + p), g.dx.dtype());
      } else if (g.dh0.defined()) {
        StoreRowF32(dx, a.D, conv_row(g.dh0, n, W - 1 + p), g.dh0.dtype());
      }
    }
  });
  // The initial state of a sequence shorter than W - 1 also feeds the final state directly;
  // those positions are below 0 and were handled by the first (only) block above.
  if (g.dweight.defined() || g.dbias.defined()) {
    std::vector<double> sum((W + 1) * DP, 0.0);
    for (size_t i = 0; i < items.size(); ++i)
      for (size_t e = 0; e < sum.size(); ++e) sum[e] += partial[i * (W + 1) * DP + e];
    for (int64_t d = 0; d < a.D; ++d) {
      if (g.dweight.defined())
        for (int64_t j = 0; j < W; ++j)
          store_at(g.dweight, d * g.dweight.stride(0) + j * g.dweight.stride(1), sum[j * DP + d]);
      if (g.dbias.defined()) store_at(g.dbias, d * g.dbias.stride(0), sum[W * DP + d]);
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

void short_conv_forward(const detail::ConvArgs& a) {
  HWY_DYNAMIC_DISPATCH(Forward)(a);
}
void short_conv_backward(const detail::ConvArgs& a) {
  HWY_DYNAMIC_DISPATCH(Backward)(a);
}

}  // namespace subq::cpu
#endif
