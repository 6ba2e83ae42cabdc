// Public hybrid-attention entry points. The fast path composes two kernels:
// - the softmax window (src/cpu/hybrid_window.cc) gives its numerator and denominator;
// - the linear part is linear attention run on keys and values shifted by w (key j enters the
//   state at step j + w) with a ones column for the normaliser, through the chunked kernels. With
//   a gate, key j is pre-scaled by exp(g_{j+1} + ... + g_{j+w}) so that the state's own decay
//   from step j + w on completes exp(g_{j+1} + ... + g_n).
// o = (num_window + num_linear) / (den_window + den_linear). The backward runs the same pieces
// in reverse. Decode keeps a ring of the last w tokens and folds the one leaving the window into
// the linear state (HybridCache).
#include "subq/hybrid.h"

#include <cmath>
#include <vector>

#include "src/checks.h"
#include "src/cpu/hybrid_window.h"
#include "src/hybrid_args.h"
#include "src/ref/hybrid_ref.h"
#include "subq/error.h"
#include "subq/linear.h"

namespace subq {

namespace {

using detail::concat;
using detail::HybridArgs;
using namespace detail::checks;  // NOLINT: the shared argument checks

HybridArgs make_args(const char* where, const TensorView& q, const TensorView& k,
                     const TensorView& fq, const TensorView& fk, const TensorView& v,
                     const HybridOptions& opt) {
  const bool f64 = resolve_impl(opt.impl) == Impl::kRef;
  check_attention_inputs(where, {{"q", &q}, {"k", &k}, {"fq", &fq}, {"fk", &fk}, {"v", &v}}, f64);
  HybridArgs a;
  a.q = q;
  a.k = k;
  a.fq = fq;
  a.fk = fk;
  a.v = v;
  a.B = q.size(0);
  a.T = q.size(1);
  a.H = q.size(2);
  a.d = q.size(3);
  a.f = fq.size(3);
  a.dv = v.size(3);
  SUBQ_CHECK_ARG(k.sizes() == q.sizes(), where, "k", shape_str(q.sizes()), k.describe());
  SUBQ_CHECK_ARG(fk.sizes() == fq.sizes(), where, "fk", shape_str(fq.sizes()), fk.describe());
  for (auto [t, name] : {std::pair{&fq, "fq"}, {&v, "v"}})
    SUBQ_CHECK_ARG(t->size(0) == a.B && t->size(1) == a.T && t->size(2) == a.H, where, name,
                   concat("[", a.B, ", ", a.T, ", ", a.H, ", *] (as q)"), t->describe());
  SUBQ_CHECK_ARG(opt.window >= 1, where, "window", ">= 1 (keys in the window, self included)",
                 opt.window);
  a.w = opt.window;
  SUBQ_CHECK_ARG(
      opt.chunk_size >= 16 && opt.chunk_size <= 256 && (opt.chunk_size & (opt.chunk_size - 1)) == 0,
      where, "chunk_size", "a power of two from 16 to 256", opt.chunk_size);
  a.chunk = opt.chunk_size;
  if (opt.scale) {
    SUBQ_CHECK_ARG(std::isfinite(*opt.scale), where, "scale", "a finite value", *opt.scale);
    a.scale = *opt.scale;
  } else {
    a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(a.d)));
  }
  SUBQ_CHECK_ARG(opt.window_factor.defined(), where, "window_factor",
                 concat("an f32 [", a.H, "] tensor (gamma = sigmoid(window_factor))"), "none");
  check_state(where, "window_factor", opt.window_factor, {a.H}, f64);
  a.window_factor = opt.window_factor;
  for (int64_t h = 0; h < a.H; ++h) {
    const double wf = load_at(opt.window_factor, h * opt.window_factor.stride(0));
    SUBQ_CHECK_ARG(std::isfinite(wf), where, "window_factor", "finite values", wf);
    a.gamma.push_back(1.0 / (1.0 + std::exp(-wf)));
  }
  if (opt.g.defined()) {
    check_input(where, "g", opt.g, 3, f64);
    SUBQ_CHECK_ARG(opt.g.sizes() == std::vector<int64_t>({a.B, a.T, a.H}), where, "g",
                   concat("shape [", a.B, ", ", a.T, ", ", a.H, "]"), opt.g.describe());
    for (int64_t b = 0; b < a.B; ++b)
      for (int64_t t = 0; t < a.T; ++t)
        for (int64_t h = 0; h < a.H; ++h) {
          const double x = get_element(opt.g, {b, t, h});
          SUBQ_CHECK_ARG(x <= 0.0, where, "g", "log decays <= 0 (-inf allowed)", x, " at [", b,
                         ", ", t, ", ", h, "]");
        }
    a.g = opt.g;
  }
  SUBQ_CHECK_ARG(opt.meta_k.defined() == opt.meta_v.defined(), where,
                 opt.meta_k.defined() ? "meta_v" : "meta_k", "both meta_k and meta_v, or neither",
                 "only one");
  if (opt.meta_k.defined()) {
    check_input(where, "meta_k", opt.meta_k, 3, f64);
    check_input(where, "meta_v", opt.meta_v, 3, f64);
    a.M = opt.meta_k.size(1);
    SUBQ_CHECK_ARG(opt.meta_k.size(0) == a.H && opt.meta_k.size(2) == a.d, where, "meta_k",
                   concat("shape [", a.H, ", M, ", a.d, "]"), opt.meta_k.describe());
    SUBQ_CHECK_ARG(opt.meta_v.sizes() == std::vector<int64_t>({a.H, a.M, a.dv}), where, "meta_v",
                   concat("shape [", a.H, ", ", a.M, ", ", a.dv, "]"), opt.meta_v.describe());
    a.meta_k = opt.meta_k;
    a.meta_v = opt.meta_v;
  }
  return a;
}

float* ptr(Tensor& t) {
  return t.data_as<float>();
}

// The linear part's inputs: fq as f32, and the shifted, pre-decayed keys k' and values
// v' = [v, 1] (row t holds token t - w).
struct LinearInputs {
  Tensor fq, ks, vs, gate_sum;  // gate_sum [B, T, H]: g_{j+1} + ... + g_{j+w}
};

LinearInputs shifted_inputs(const HybridArgs& a) {
  LinearInputs in;
  in.fq = Tensor::copy_of(a.fq, DType::kF32);
  in.ks = Tensor::zeros({a.B, a.T, a.H, a.f}, DType::kF32);
  in.vs = Tensor::zeros({a.B, a.T, a.H, a.dv + 1}, DType::kF32);
  in.gate_sum = Tensor::zeros({a.B, a.T, a.H}, DType::kF32);
  float* gs = ptr(in.gate_sum);
  if (a.g.defined())
    for (int64_t b = 0; b < a.B; ++b)
      for (int64_t h = 0; h < a.H; ++h) {
        double run = 0;  // sliding sum of g over (j, j + w]
        for (int64_t t = 1; t <= std::min(a.w, a.T - 1); ++t) run += get_element(a.g, {b, t, h});
        for (int64_t j = 0; j + a.w < a.T; ++j) {
          gs[(b * a.T + j) * a.H + h] = static_cast<float>(run);
          run -= get_element(a.g, {b, j + 1, h});
          if (j + a.w + 1 < a.T) run += get_element(a.g, {b, j + a.w + 1, h});
        }
      }
  for (int64_t b = 0; b < a.B; ++b)
    for (int64_t t = a.w; t < a.T; ++t) {
      const int64_t j = t - a.w;
      copy_into(a.fk.narrow(0, b, 1).narrow(1, j, 1), in.ks.view().narrow(0, b, 1).narrow(1, t, 1));
      copy_into(a.v.narrow(0, b, 1).narrow(1, j, 1),
                in.vs.view().narrow(0, b, 1).narrow(1, t, 1).narrow(3, 0, a.dv));
      for (int64_t h = 0; h < a.H; ++h) {
        const float decay = a.g.defined() ? std::exp(gs[(b * a.T + j) * a.H + h]) : 1.f;
        float* kr = ptr(in.ks) + ((b * a.T + t) * a.H + h) * a.f;
        for (int64_t i = 0; i < a.f; ++i) kr[i] *= decay;
        ptr(in.vs)[((b * a.T + t) * a.H + h) * (a.dv + 1) + a.dv] = 1.f;
      }
    }
  return in;
}

LinearAttentionOptions linear_options(const HybridArgs& a) {
  LinearAttentionOptions o;
  o.scale = 1.f;
  o.g = a.g;
  o.chunk_size = a.chunk;
  o.impl = Impl::kFast;
  return o;
}

// Forward pieces: the window numerator/denominator and the linear part's [num, den] columns.
struct Pieces {
  Tensor num_w, den_w, lin;
  LinearInputs in;
};

Pieces forward_pieces(const HybridArgs& a) {
  Pieces p;
  p.num_w = Tensor::empty({a.B, a.T, a.H, a.dv}, DType::kF32);
  p.den_w = Tensor::empty({a.B, a.T, a.H}, DType::kF32);
  cpu::hybrid_window_forward(a, ptr(p.num_w), ptr(p.den_w));
  p.in = shifted_inputs(a);
  p.lin = Tensor::empty({a.B, a.T, a.H, a.dv + 1}, DType::kF32);
  linear_attention_forward(p.in.fq, p.in.ks, p.in.vs, p.lin, {}, {}, linear_options(a));
  return p;
}

}  // namespace

void hybrid_attention_forward(const TensorView& q, const TensorView& k, const TensorView& fq,
                              const TensorView& fk, const TensorView& v, const TensorView& out,
                              const HybridOptions& opt) {
  const char* where = "hybrid_attention_forward";
  HybridArgs a = make_args(where, q, k, fq, fk, v, opt);
  const bool f64 = resolve_impl(opt.impl) == Impl::kRef;
  check_output(where, "out", out, v.sizes(), f64);
  a.out = out;
  if (f64) return ref::hybrid_forward(a);
  UnitStride uq(a.q, false), uk(a.k, false), uv(a.v, false);
  Pieces p = forward_pieces(a);
  std::vector<float> row(a.dv);
  for (int64_t b = 0; b < a.B; ++b)
    for (int64_t t = 0; t < a.T; ++t)
      for (int64_t h = 0; h < a.H; ++h) {
        const int64_t r = (b * a.T + t) * a.H + h;
        const float* nw = ptr(p.num_w) + r * a.dv;
        const float* lin = ptr(p.lin) + r * (a.dv + 1);
        const float den = ptr(p.den_w)[r] + lin[a.dv];
        for (int64_t i = 0; i < a.dv; ++i) row[i] = (nw[i] + lin[i]) / den;
        copy_into(TensorView(row.data(), DType::kF32, {1, 1, 1, a.dv}),
                  out.narrow(0, b, 1).narrow(1, t, 1).narrow(2, h, 1));
      }
}

void hybrid_attention_backward(const TensorView& q, const TensorView& k, const TensorView& fq,
                               const TensorView& fk, const TensorView& v, const TensorView& dout,
                               const HybridGrads& grads, const HybridOptions& opt) {
  const char* where = "hybrid_attention_backward";
  HybridArgs a = make_args(where, q, k, fq, fk, v, opt);
  const bool f64 = resolve_impl(opt.impl) == Impl::kRef;
  check_output(where, "dout", dout, v.sizes(), f64);
  for (auto [t, like, name] : {std::tuple{&grads.dq, &q, "dq"},
                               {&grads.dk, &k, "dk"},
                               {&grads.dfq, &fq, "dfq"},
                               {&grads.dfk, &fk, "dfk"},
                               {&grads.dv, &v, "dv"}})
    check_output(where, name, *t, like->sizes(), f64);
  if (grads.dwindow_factor.defined())
    check_state(where, "dwindow_factor", grads.dwindow_factor, {a.H}, f64);
  if (grads.dg.defined()) {
    SUBQ_CHECK_ARG(a.g.defined(), where, "dg", "none without g", "a tensor");
    check_output(where, "dg", grads.dg, a.g.sizes(), f64);
  }
  for (auto [t, like, name] :
       {std::tuple{&grads.dmeta_k, &a.meta_k, "dmeta_k"}, {&grads.dmeta_v, &a.meta_v, "dmeta_v"}})
    if (t->defined()) {
      SUBQ_CHECK_ARG(like->defined(), where, name, "none without meta tokens", "a tensor");
      check_output(where, name, *t, like->sizes(), f64);
    }
  a.dout = dout;
  a.grads = grads;
  if (f64) return ref::hybrid_backward(a);
  UnitStride uq(a.q, false), uk(a.k, false), uv(a.v, false);
  Pieces p = forward_pieces(a);
  // o = num / den: dnum = do / den, dden = -(do . num) / den^2.
  Tensor dnum = Tensor::empty({a.B, a.T, a.H, a.dv}, DType::kF32);
  Tensor dden = Tensor::empty({a.B, a.T, a.H}, DType::kF32);
  Tensor dout_lin = Tensor::empty({a.B, a.T, a.H, a.dv + 1}, DType::kF32);
  Tensor dof = Tensor::copy_of(dout, DType::kF32);
  for (int64_t r = 0; r < a.B * a.T * a.H; ++r) {
    const float* nw = ptr(p.num_w) + r * a.dv;
    const float* lin = ptr(p.lin) + r * (a.dv + 1);
    const float* g = ptr(dof) + r * a.dv;
    const double den = static_cast<double>(ptr(p.den_w)[r]) + lin[a.dv];
    double dd = 0;
    for (int64_t i = 0; i < a.dv; ++i) {
      ptr(dnum)[r * a.dv + i] = static_cast<float>(g[i] / den);
      dd -= g[i] * (static_cast<double>(nw[i]) + lin[i]) / (den * den);
    }
    ptr(dden)[r] = static_cast<float>(dd);
    std::copy(ptr(dnum) + r * a.dv, ptr(dnum) + (r + 1) * a.dv, ptr(dout_lin) + r * (a.dv + 1));
    ptr(dout_lin)[r * (a.dv + 1) + a.dv] = static_cast<float>(dd);
  }
  // Window part.
  Tensor dq = Tensor::zeros({a.B, a.T, a.H, a.d}, DType::kF32),
         dk = Tensor::zeros(dq.sizes(), DType::kF32);
  Tensor dv = Tensor::zeros({a.B, a.T, a.H, a.dv}, DType::kF32);
  Tensor dmk = Tensor::zeros({a.H, std::max<int64_t>(a.M, 1), a.d}, DType::kF32);
  Tensor dmv = Tensor::zeros({a.H, std::max<int64_t>(a.M, 1), a.dv}, DType::kF32);
  cpu::hybrid_window_backward(a, ptr(dnum), ptr(dden), ptr(dq), ptr(dk), ptr(dv), ptr(dmk),
                              ptr(dmv), nullptr);
  // d gamma: with o = (N_w + N_l) / (D_w + D_l) and N_w, D_w linear in gamma,
  //   dL/dgamma = sum_n do_n . (N_w D_l - D_w N_l) / (D^2 gamma).
  // Written this way, not as N_w . dnum + D_w . dden: when the linear part is small those two
  // nearly cancel, and in f32 the difference was 5-10 % off (measured against the reference).
  std::vector<double> dgamma(a.H, 0.0);
  for (int64_t r = 0; r < a.B * a.T * a.H; ++r) {
    const int64_t h = r % a.H;
    const float* nw = ptr(p.num_w) + r * a.dv;
    const float* lin = ptr(p.lin) + r * (a.dv + 1);
    const float* g = ptr(dof) + r * a.dv;
    const double dw = ptr(p.den_w)[r], dl = lin[a.dv], den = dw + dl;
    double acc = 0;
    for (int64_t i = 0; i < a.dv; ++i)
      acc += g[i] * (static_cast<double>(nw[i]) * dl - dw * static_cast<double>(lin[i]));
    dgamma[h] += acc / (den * den * a.gamma[h]);
  }
  // Linear part, through linear attention's backward on the shifted inputs.
  Tensor dfq = Tensor::empty({a.B, a.T, a.H, a.f}, DType::kF32),
         dks = Tensor::empty(dfq.sizes(), DType::kF32);
  Tensor dvs = Tensor::empty({a.B, a.T, a.H, a.dv + 1}, DType::kF32);
  Tensor dg_lin;
  LinearAttentionGrads lg;
  lg.dq = dfq;
  lg.dk = dks;
  lg.dv = dvs;
  if (a.g.defined()) lg.dg = dg_lin = Tensor::empty({a.B, a.T, a.H}, DType::kF32);
  linear_attention_backward(p.in.fq, p.in.ks, p.in.vs, dout_lin, {}, {}, lg, linear_options(a));
  // Unshift: key j sits at row j + w, pre-scaled by exp(gate_sum_j).
  Tensor dfk = Tensor::zeros({a.B, a.T, a.H, a.f}, DType::kF32);
  std::vector<double> dgs(a.B * a.T * a.H, 0.0);  // gradient of gate_sum_j
  for (int64_t b = 0; b < a.B; ++b)
    for (int64_t t = a.w; t < a.T; ++t)
      for (int64_t h = 0; h < a.H; ++h) {
        const int64_t j = t - a.w, rs = (b * a.T + t) * a.H + h, rj = (b * a.T + j) * a.H + h;
        const float decay = a.g.defined() ? std::exp(ptr(p.in.gate_sum)[rj]) : 1.f;
        double dsum = 0;
        for (int64_t i = 0; i < a.f; ++i) {
          const float gk = ptr(dks)[rs * a.f + i];
          ptr(dfk)[rj * a.f + i] = gk * decay;
          dsum += static_cast<double>(gk) * ptr(p.in.ks)[rs * a.f + i];
        }
        dgs[rj] = dsum;
        for (int64_t i = 0; i < a.dv; ++i) ptr(dv)[rj * a.dv + i] += ptr(dvs)[rs * (a.dv + 1) + i];
      }
  // Outputs.
  copy_into(dq, grads.dq);
  copy_into(dk, grads.dk);
  copy_into(dfq, grads.dfq);
  copy_into(dfk, grads.dfk);
  copy_into(dv, grads.dv);
  if (grads.dwindow_factor.defined())
    for (int64_t h = 0; h < a.H; ++h)
      store_at(grads.dwindow_factor, h * grads.dwindow_factor.stride(0),
               dgamma[h] * a.gamma[h] * (1 - a.gamma[h]));
  if (grads.dg.defined()) {
    // gate_sum_j = g_{j+1} + ... + g_{j+w}: dg_r gets dgs_j for j in [r - w, r - 1].
    for (int64_t b = 0; b < a.B; ++b)
      for (int64_t h = 0; h < a.H; ++h)
        for (int64_t r = 0; r < a.T; ++r) {
          double acc = ptr(dg_lin)[(b * a.T + r) * a.H + h];
          for (int64_t j = std::max<int64_t>(0, r - a.w); j < r; ++j)
            acc += dgs[(b * a.T + j) * a.H + h];
          set_element(grads.dg, {b, r, h}, acc);
        }
  }
  if (grads.dmeta_k.defined()) copy_into(dmk.view().narrow(1, 0, a.M), grads.dmeta_k);
  if (grads.dmeta_v.defined()) copy_into(dmv.view().narrow(1, 0, a.M), grads.dmeta_v);
}

HybridCache HybridCache::create(int64_t B, int64_t H, int64_t d, int64_t f, int64_t dv,
                                int64_t window) {
  SUBQ_CHECK_ARG(B >= 1 && H >= 1 && d >= 1 && f >= 1 && dv >= 1 && window >= 1,
                 "HybridCache::create", "B, H, d, f, dv, window", "all >= 1", B, ", ", H, ", ", d,
                 ", ", f, ", ", dv, ", ", window);
  HybridCache c;
  c.k = Tensor::zeros({B, window, H, d}, DType::kF32);
  c.v = Tensor::zeros({B, window, H, dv}, DType::kF32);
  c.fk = Tensor::zeros({B, window, H, f}, DType::kF32);
  c.g = Tensor::zeros({B, window, H}, DType::kF32);
  c.S = Tensor::zeros({B, H, f, dv + 1}, DType::kF32);
  c.seen.assign(B, 0);
  c.window = window;
  return c;
}

size_t HybridCache::nbytes() const {
  return k.nbytes() + v.nbytes() + fk.nbytes() + g.nbytes() + S.nbytes();
}

namespace {

// Row (b, t, h) of a [B, T, H, n] view as f32 into dst.
void read_row(const TensorView& t, int64_t b, int64_t r, int64_t h, float* dst) {
  const char* p = detail::row_ptr(t, b, r, h);
  for (int64_t i = 0; i < t.size(3); ++i)
    dst[i] = static_cast<float>(load_element(p, t.dtype(), i * t.stride(3)));
}

// Appends token t of sequence b to the cache: decays the linear state by the token's gate, folds
// the key leaving the window into it, and writes the ring slot. The cache tensors are contiguous
// f32: [B, w, H, *] rings and the [B, H, f, dv + 1] state.
void cache_push(HybridCache& c, int64_t b, const TensorView& k, const TensorView& fk,
                const TensorView& v, const TensorView& g, int64_t t) {
  const int64_t H = c.k.size(2), d = c.k.size(3), f = c.fk.size(3), dv = c.v.size(3);
  const int64_t n = c.seen[b], w = c.window, slot = n % w;
  float* S = c.S.data_as<float>() + b * H * f * (dv + 1);
  float* ring_g = c.g.data_as<float>() + b * w * H;
  auto ring = [&](const Tensor& r, int64_t s, int64_t h, int64_t width) {
    return r.data_as<float>() + ((b * w + s) * H + h) * width;
  };
  for (int64_t h = 0; h < H; ++h) {
    const float gn = g.defined() ? static_cast<float>(get_element(g, {b, t, h})) : 0.f;
    float* Sh = S + h * f * (dv + 1);
    if (g.defined()) {
      const float decay = std::exp(gn);
      for (int64_t e = 0; e < f * (dv + 1); ++e) Sh[e] *= decay;
    }
    if (n >= w) {  // token n - w (in `slot`) leaves the window: fold it, decayed by g_{n-w+1..n}
      double gsum = gn;
      for (int64_t s2 = 0; s2 < w; ++s2)
        if (s2 != slot) gsum += ring_g[s2 * H + h];
      const float decay = g.defined() ? static_cast<float>(std::exp(gsum)) : 1.f;
      const float* fkr = ring(c.fk, slot, h, f);
      const float* vr = ring(c.v, slot, h, dv);
      for (int64_t i = 0; i < f; ++i) {
        const float fki = decay * fkr[i];
        float* row = Sh + i * (dv + 1);
        for (int64_t j = 0; j < dv; ++j) row[j] += fki * vr[j];
        row[dv] += fki;
      }
    }
    read_row(k, b, t, h, ring(c.k, slot, h, d));
    read_row(fk, b, t, h, ring(c.fk, slot, h, f));
    read_row(v, b, t, h, ring(c.v, slot, h, dv));
    ring_g[slot * H + h] = gn;
  }
  c.seen[b] = n + 1;
}

void check_cache(const char* where, const HybridCache& c, const TensorView& k, const TensorView& fk,
                 const TensorView& v, const HybridOptions& opt) {
  SUBQ_CHECK_ARG(c.S.defined(), where, "cache", "a cache from HybridCache::create", "an empty one");
  SUBQ_CHECK_ARG(c.window == opt.window, where, "cache",
                 concat("window ", opt.window, " (options)"), c.window);
  SUBQ_CHECK_ARG(
      k.size(0) == c.k.size(0) && k.size(2) == c.k.size(2) && k.size(3) == c.k.size(3), where, "k",
      concat("[", c.k.size(0), ", *, ", c.k.size(2), ", ", c.k.size(3), "] (the cache's shape)"),
      k.describe());
  SUBQ_CHECK_ARG(fk.size(3) == c.fk.size(3), where, "fk",
                 concat("feature size ", c.fk.size(3), " (the cache's)"), fk.size(3));
  SUBQ_CHECK_ARG(v.size(3) == c.v.size(3), where, "v",
                 concat("value size ", c.v.size(3), " (the cache's)"), v.size(3));
}

}  // namespace

void hybrid_cache_prefill(const TensorView& k, const TensorView& fk, const TensorView& v,
                          const TensorView& g, HybridCache& cache, const HybridOptions& opt) {
  const char* where = "hybrid_cache_prefill";
  if (g.defined()) {
    check_input(where, "g", g, 3);
    SUBQ_CHECK_ARG(g.sizes() == std::vector<int64_t>({k.size(0), k.size(1), k.size(2)}), where, "g",
                   shape_str({k.size(0), k.size(1), k.size(2)}), g.describe());
  }
  for (auto [t, name] : {std::pair{&k, "k"}, {&fk, "fk"}, {&v, "v"}})
    check_input(where, name, *t, 4);
  check_cache(where, cache, k, fk, v, opt);
  for (int64_t b = 0; b < k.size(0); ++b) {
    SUBQ_CHECK_ARG(cache.seen[b] == 0, where, "cache", "an empty cache", cache.seen[b],
                   " tokens seen at batch ", b);
    for (int64_t t = 0; t < k.size(1); ++t) cache_push(cache, b, k, fk, v, g, t);
  }
}

void hybrid_attention_step(const TensorView& q, const TensorView& k, const TensorView& fq,
                           const TensorView& fk, const TensorView& v, const TensorView& g,
                           HybridCache& cache, const TensorView& out, const HybridOptions& opt) {
  const char* where = "hybrid_attention_step";
  HybridOptions o = opt;
  o.g = g;  // the step's own gate, [B, 1, H]
  HybridArgs a = make_args(where, q, k, fq, fk, v, o);
  SUBQ_CHECK_ARG(a.T == 1, where, "q", "one token per sequence ([B, 1, H, d])", q.describe());
  check_output(where, "out", out, v.sizes());
  check_cache(where, cache, k, fk, v, opt);
  const int64_t w = cache.window;
  std::vector<float> qv(a.d), fqv(a.f), row(a.dv);
  std::vector<double> num(a.dv), logits;
  Tensor mk, mv;  // meta tokens as f32 [H, M, *]
  if (a.M > 0) {
    mk = Tensor::copy_of(a.meta_k, DType::kF32);
    mv = Tensor::copy_of(a.meta_v, DType::kF32);
  }
  for (int64_t b = 0; b < a.B; ++b) {
    cache_push(cache, b, k, fk, v, g, 0);
    const int64_t n = cache.seen[b] - 1;
    for (int64_t h = 0; h < a.H; ++h) {
      read_row(q, b, 0, h, qv.data());
      read_row(fq, b, 0, h, fqv.data());
      // Softmax set: meta tokens, then the ring's tokens max(0, n - w + 1) .. n.
      std::vector<std::pair<const float*, const float*>> set;  // (key, value)
      for (int64_t m = 0; m < a.M; ++m)
        set.push_back({mk.data_as<float>() + (h * a.M + m) * a.d,
                       mv.data_as<float>() + (h * a.M + m) * a.dv});
      for (int64_t p = std::max<int64_t>(0, n - w + 1); p <= n; ++p) {
        const int64_t slot = p % w;
        set.push_back({cache.k.data_as<float>() + ((b * w + slot) * a.H + h) * a.d,
                       cache.v.data_as<float>() + ((b * w + slot) * a.H + h) * a.dv});
      }
      logits.clear();
      double c = -INFINITY;
      for (auto [key, val] : set) {
        double s = 0;
        for (int64_t i = 0; i < a.d; ++i) s += static_cast<double>(qv[i]) * key[i];
        logits.push_back(a.scale * s);
        c = std::max(c, logits.back());
      }
      std::fill(num.begin(), num.end(), 0.0);
      double den = 0;
      for (size_t e = 0; e < set.size(); ++e) {
        const double wgt = a.gamma[h] * std::exp(logits[e] - c);
        den += wgt;
        for (int64_t i = 0; i < a.dv; ++i) num[i] += wgt * set[e].second[i];
      }
      const float* S = cache.S.data_as<float>() + (b * a.H + h) * a.f * (a.dv + 1);
      for (int64_t i = 0; i < a.f; ++i) {
        const double fqi = fqv[i];
        for (int64_t j = 0; j < a.dv; ++j) num[j] += fqi * S[i * (a.dv + 1) + j];
        den += fqi * S[i * (a.dv + 1) + a.dv];
      }
      for (int64_t j = 0; j < a.dv; ++j) row[j] = static_cast<float>(num[j] / den);
      char* dst = detail::row_ptr(out, b, 0, h);
      for (int64_t j = 0; j < a.dv; ++j) store_element(dst, out.dtype(), j * out.stride(3), row[j]);
    }
  }
}

}  // namespace subq
