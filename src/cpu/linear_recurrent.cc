// Linear attention, recurrent form: token by token, the definition itself, vectorised along the
// value dim. Used for decode steps (T = 1), as the `recurrent` mode, and for non-causal
// (global-state) attention.
//
// Work item = (sequence, value head); its K x Vc state lives in per-thread scratch (64 KiB at
// K = V = 128: L2-resident). Per token and state row i, one fused pass does
//   S_i = a_i (S_i o b) + k_i v        and        o += q_i S_i
// so the state is read and written once per token.
//
// Backward, two sweeps and no stored states (as fla's fused_recurrent):
//   forward sweep  recompute S_t;  dq_t = scale S_t do_t
//   reverse sweep  dS += scale q_t do_t^T;  dk_t = dS v_t;  dv_t = dS^T k_t;  dS = a_t dS b_t
#include <algorithm>
#include <cmath>
#include <vector>

#include "src/cpu/linear_cpu.h"
#include "subq/tensor.h"
#include "subq/threads.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/cpu/linear_recurrent.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "src/cpu/linear_tile-inl.h"

HWY_BEFORE_NAMESPACE();
namespace subq::cpu::HWY_NAMESPACE {
namespace {

using detail::LinearArgs;
using detail::LinearSeq;
using detail::row_ptr;

// Per-thread buffers of one item.
struct RecScratch {
  float *S, *q, *k, *v, *o, *ak, *bv, *dq, *dk;
  static size_t Floats(size_t K, size_t VP) { return K * VP + 4 * K + 3 * VP + 2 * K + VP; }
  RecScratch(float* p, size_t K, size_t VP) {
    S = p;
    q = S + K * VP;
    k = q + K;
    v = k + K;
    o = v + VP;
    ak = o + VP;
    bv = ak + K;
    dq = bv + VP;
    dk = dq + K;
  }
};

void ForwardItem(const LinearCore& c, size_t n, int64_t h, const RecScratch& w) {
  const hn::ScalableTag<float> df;
  using Vec = hn::Vec<decltype(df)>;
  const size_t L = hn::Lanes(df);
  const LinearArgs& a = *c.a;
  const LinearSeq& s = a.seqs[n];
  const int64_t K = a.K, hk = h / a.group();
  const size_t VP = RoundUp(c.Vc, L);
  LoadState(c.h0, a, n, h, K, c.Vc, VP, w.S);
  const Vec scale = hn::Set(df, c.scale);

  if (!a.causal) {  // S = S0 + sum_t k_t v_t^T, then o_t = scale q_t^T S
    for (int64_t t = 0; t < s.T; ++t) {
      const int64_t r = s.start + t;
      LoadRowF32(row_ptr(a.k, s.batch, r, hk), a.k.dtype(), K, w.k, K);
      LoadRowF32(row_ptr(c.v, s.batch, r, h), c.v.dtype(), c.Vc, w.v, VP);
      for (int64_t i = 0; i < K; ++i) AxpyRow(w.k[i], w.v, w.S + i * VP, VP);
    }
  }
  for (int64_t t = 0; t < s.T; ++t) {
    const int64_t r = s.start + t;
    LoadRowF32(row_ptr(a.q, s.batch, r, hk), a.q.dtype(), K, w.q, K);
    for (size_t j = 0; j < VP; j += L) hn::StoreU(hn::Zero(df), df, w.o + j);
    if (a.causal) {
      LoadRowF32(row_ptr(a.k, s.batch, r, hk), a.k.dtype(), K, w.k, K);
      LoadRowF32(row_ptr(c.v, s.batch, r, h), c.v.dtype(), c.Vc, w.v, VP);
      const bool gk = LoadDecayK(a, s, r, h, w.ak);
      const bool gv = LoadDecayV(c, s, r, h, w.bv, VP);
      for (int64_t i = 0; i < K; ++i) {
        float* Si = w.S + i * VP;
        const Vec ai = hn::Set(df, gk ? w.ak[i] : 1.f), ki = hn::Set(df, w.k[i]);
        const Vec qi = hn::Set(df, w.q[i]);
        for (size_t j = 0; j < VP; j += L) {
          Vec x = hn::LoadU(df, Si + j);
          if (gv) x = hn::Mul(x, hn::LoadU(df, w.bv + j));
          x = hn::MulAdd(ki, hn::LoadU(df, w.v + j), hn::Mul(ai, x));
          hn::StoreU(x, df, Si + j);
          hn::StoreU(hn::MulAdd(qi, x, hn::LoadU(df, w.o + j)), df, w.o + j);
        }
      }
    } else {
      for (int64_t i = 0; i < K; ++i) AxpyRow(w.q[i], w.S + i * VP, w.o, VP);
    }
    for (size_t j = 0; j < VP; j += L)
      hn::StoreU(hn::Mul(scale, hn::LoadU(df, w.o + j)), df, w.o + j);
    StoreRowF32(w.o, c.Vc, row_ptr(c.out, s.batch, r, h), c.out.dtype());
  }
  StoreState(c.ht, a, n, h, K, c.Vc, VP, w.S);
}

void BackwardItem(const LinearCore& c, size_t n, int64_t h, const RecScratch& w, float* dvt,
                  float* dS) {
  const hn::ScalableTag<float> df;
  using Vec = hn::Vec<decltype(df)>;
  const size_t L = hn::Lanes(df);
  const LinearArgs& a = *c.a;
  const LinearSeq& s = a.seqs[n];
  const int64_t K = a.K, hk = h / a.group();
  const size_t VP = RoundUp(c.Vc, L);
  float* do_row = w.o;  // reuse: the upstream gradient row

  // Forward sweep (or the global state): dq_t = scale S_t do_t.
  LoadState(c.h0, a, n, h, K, c.Vc, VP, w.S);
  if (!a.causal) {
    for (int64_t t = 0; t < s.T; ++t) {
      const int64_t r = s.start + t;
      LoadRowF32(row_ptr(a.k, s.batch, r, hk), a.k.dtype(), K, w.k, K);
      LoadRowF32(row_ptr(c.v, s.batch, r, h), c.v.dtype(), c.Vc, w.v, VP);
      for (int64_t i = 0; i < K; ++i) AxpyRow(w.k[i], w.v, w.S + i * VP, VP);
    }
  }
  for (int64_t t = 0; t < s.T; ++t) {
    const int64_t r = s.start + t;
    LoadRowF32(row_ptr(c.dout, s.batch, r, h), c.dout.dtype(), c.Vc, do_row, VP);
    if (a.causal) {
      LoadRowF32(row_ptr(a.k, s.batch, r, hk), a.k.dtype(), K, w.k, K);
      LoadRowF32(row_ptr(c.v, s.batch, r, h), c.v.dtype(), c.Vc, w.v, VP);
      const bool gk = LoadDecayK(a, s, r, h, w.ak);
      const bool gv = LoadDecayV(c, s, r, h, w.bv, VP);
      for (int64_t i = 0; i < K; ++i) {
        float* Si = w.S + i * VP;
        const Vec ai = hn::Set(df, gk ? w.ak[i] : 1.f), ki = hn::Set(df, w.k[i]);
        Vec acc = hn::Zero(df);
        for (size_t j = 0; j < VP; j += L) {
          Vec x = hn::LoadU(df, Si + j);
          if (gv) x = hn::Mul(x, hn::LoadU(df, w.bv + j));
          x = hn::MulAdd(ki, hn::LoadU(df, w.v + j), hn::Mul(ai, x));
          hn::StoreU(x, df, Si + j);
          acc = hn::MulAdd(x, hn::LoadU(df, do_row + j), acc);
        }
        w.dq[i] = c.scale * hn::GetLane(hn::SumOfLanes(df, acc));
      }
    } else {
      for (int64_t i = 0; i < K; ++i) w.dq[i] = c.scale * DotRow(w.S + i * VP, do_row, VP);
    }
    std::copy(w.dq, w.dq + K, c.dq + core_row(a, s.batch, r, h) * K);
  }

  // Reverse sweep: dS starts as dht (non-causal: dS = dht + scale sum_t q_t do_t^T first).
  LoadState(c.dht, a, n, h, K, c.Vc, VP, dS);
  if (!a.causal) {
    for (int64_t t = 0; t < s.T; ++t) {
      const int64_t r = s.start + t;
      LoadRowF32(row_ptr(a.q, s.batch, r, hk), a.q.dtype(), K, w.q, K);
      LoadRowF32(row_ptr(c.dout, s.batch, r, h), c.dout.dtype(), c.Vc, do_row, VP);
      for (int64_t i = 0; i < K; ++i) AxpyRow(c.scale * w.q[i], do_row, dS + i * VP, VP);
    }
  }
  for (int64_t t = s.T - 1; t >= 0; --t) {
    const int64_t r = s.start + t;
    LoadRowF32(row_ptr(a.k, s.batch, r, hk), a.k.dtype(), K, w.k, K);
    LoadRowF32(row_ptr(c.v, s.batch, r, h), c.v.dtype(), c.Vc, w.v, VP);
    bool gk = false, gv = false;
    if (a.causal) {
      LoadRowF32(row_ptr(a.q, s.batch, r, hk), a.q.dtype(), K, w.q, K);
      LoadRowF32(row_ptr(c.dout, s.batch, r, h), c.dout.dtype(), c.Vc, do_row, VP);
      gk = LoadDecayK(a, s, r, h, w.ak);
      gv = LoadDecayV(c, s, r, h, w.bv, VP);
    }
    for (size_t j = 0; j < VP; j += L) hn::StoreU(hn::Zero(df), df, dvt + j);
    for (int64_t i = 0; i < K; ++i) {
      float* dSi = dS + i * VP;
      const Vec qi = hn::Set(df, a.causal ? c.scale * w.q[i] : 0.f);
      const Vec ki = hn::Set(df, w.k[i]);
      Vec acc = hn::Zero(df);
      for (size_t j = 0; j < VP; j += L) {
        Vec x = hn::LoadU(df, dSi + j);
        if (a.causal) x = hn::MulAdd(qi, hn::LoadU(df, do_row + j), x);
        acc = hn::MulAdd(x, hn::LoadU(df, w.v + j), acc);
        hn::StoreU(hn::MulAdd(ki, x, hn::LoadU(df, dvt + j)), df, dvt + j);
        if (a.causal) {  // decay to the gradient of S_{t-1}
          if (gv) x = hn::Mul(x, hn::LoadU(df, w.bv + j));
          if (gk) x = hn::Mul(x, hn::Set(df, w.ak[i]));
        }
        hn::StoreU(x, df, dSi + j);
      }
      w.dk[i] = hn::GetLane(hn::SumOfLanes(df, acc));
    }
    std::copy(w.dk, w.dk + K, c.dk + core_row(a, s.batch, r, h) * K);
    StoreRowF32(dvt, c.Vc, row_ptr(c.dv, s.batch, r, h), c.dv.dtype());
  }
  StoreState(c.dh0, a, n, h, K, c.Vc, VP, dS);
}

template <class Fn>
void ForEachItem(const LinearCore& c, size_t per_thread, Fn&& fn) {
  const LinearArgs& a = *c.a;
  const int64_t items = static_cast<int64_t>(a.seqs.size()) * a.H;
  Scratch scratch(per_thread * num_threads());
  parallel_for(items, [&](int64_t it, int thread) {
    fn(static_cast<size_t>(it / a.H), it % a.H, scratch.data() + per_thread * thread);
  });
}

void RecurrentForward(const LinearCore& c) {
  const size_t L = hn::Lanes(hn::ScalableTag<float>());
  const size_t K = c.a->K, VP = RoundUp(c.Vc, L);
  ForEachItem(c, RoundUp(RecScratch::Floats(K, VP), 16),
              [&](size_t n, int64_t h, float* p) { ForwardItem(c, n, h, RecScratch(p, K, VP)); });
}

void RecurrentBackward(const LinearCore& c) {
  const size_t L = hn::Lanes(hn::ScalableTag<float>());
  const size_t K = c.a->K, VP = RoundUp(c.Vc, L);
  // The item's scratch, then dv_t (VP) and dS (K x VP).
  const size_t base = RecScratch::Floats(K, VP);
  ForEachItem(c, RoundUp(base + VP + K * VP, 16), [&](size_t n, int64_t h, float* p) {
    BackwardItem(c, n, h, RecScratch(p, K, VP), p + base, p + base + VP);
  });
}

}  // namespace
}  // namespace subq::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace subq::cpu {

HWY_EXPORT(RecurrentForward);
HWY_EXPORT(RecurrentBackward);

void linear_recurrent_forward(const LinearCore& c) {
  HWY_DYNAMIC_DISPATCH(RecurrentForward)(c);
}
void linear_recurrent_backward(const LinearCore& c) {
  HWY_DYNAMIC_DISPATCH(RecurrentBackward)(c);
}

}  // namespace subq::cpu
#endif
