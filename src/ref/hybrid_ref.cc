#include "src/ref/hybrid_ref.h"

#include <cmath>
#include <limits>
#include <vector>

namespace subq::ref {

namespace {

using detail::HybridArgs;

using Mat = std::vector<std::vector<double>>;

Mat rows(const TensorView& t, int64_t b, int64_t h, int64_t T) {
  Mat m(T, std::vector<double>(t.size(3)));
  for (int64_t r = 0; r < T; ++r)
    for (int64_t i = 0; i < t.size(3); ++i)
      m[r][i] = load_at(t, b * t.stride(0) + r * t.stride(1) + h * t.stride(2) + i * t.stride(3));
  return m;
}

Mat meta(const TensorView& t, int64_t h) {
  if (!t.defined()) return {};
  Mat m(t.size(1), std::vector<double>(t.size(2)));
  for (int64_t r = 0; r < t.size(1); ++r)
    for (int64_t i = 0; i < t.size(2); ++i)
      m[r][i] = load_at(t, h * t.stride(0) + r * t.stride(1) + i * t.stride(2));
  return m;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

void axpy(double a, const std::vector<double>& x, std::vector<double>& y) {
  for (size_t i = 0; i < x.size(); ++i) y[i] += a * x[i];
}

void add_row(const TensorView& t, int64_t b, int64_t r, int64_t h, const std::vector<double>& x) {
  for (size_t i = 0; i < x.size(); ++i) {
    const int64_t off = b * t.stride(0) + r * t.stride(1) + h * t.stride(2) + i * t.stride(3);
    store_at(t, off, load_at(t, off) + x[i]);
  }
}

// Everything one (batch, head) needs, and the per-query forward pieces.
struct Head {
  Mat q, k, fq, fk, v, mk, mv;
  std::vector<double> cum;  // cumulative log gate, cum[t] = g_0 + ... + g_t
  double gamma = 0;
};

Head load(const HybridArgs& a, int64_t b, int64_t h) {
  Head x;
  x.q = rows(a.q, b, h, a.T);
  x.k = rows(a.k, b, h, a.T);
  x.fq = rows(a.fq, b, h, a.T);
  x.fk = rows(a.fk, b, h, a.T);
  x.v = rows(a.v, b, h, a.T);
  x.mk = meta(a.meta_k, h);
  x.mv = meta(a.meta_v, h);
  x.cum.assign(a.T, 0.0);
  double acc = 0;
  for (int64_t t = 0; t < a.T; ++t) {
    if (a.g.defined())
      acc += load_at(a.g, b * a.g.stride(0) + t * a.g.stride(1) + h * a.g.stride(2));
    x.cum[t] = acc;
  }
  x.gamma = a.gamma[h];
  return x;
}

// The softmax set of query n: meta tokens (indices < 0 as -1 - m) then window keys.
std::vector<int64_t> softmax_set(const HybridArgs& a, int64_t n) {
  std::vector<int64_t> s;
  for (int64_t m = 0; m < a.M; ++m) s.push_back(-1 - m);
  for (int64_t i = std::max<int64_t>(0, n - a.w + 1); i <= n; ++i) s.push_back(i);
  return s;
}

const std::vector<double>& key(const Head& x, int64_t i) {
  return i < 0 ? x.mk[-1 - i] : x.k[i];
}
const std::vector<double>& val(const Head& x, int64_t i) {
  return i < 0 ? x.mv[-1 - i] : x.v[i];
}

struct Row {
  std::vector<double> num;
  double den = 0;
  std::vector<int64_t> set;
  std::vector<double> e;  // gamma exp(s_i - c) over the set
  int64_t argmax = 0;     // position in `set` of the max logit
};

Row forward_row(const HybridArgs& a, const Head& x, int64_t n) {
  Row r;
  r.num.assign(a.dv, 0.0);
  r.set = softmax_set(a, n);
  std::vector<double> s;
  double c = -std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < r.set.size(); ++i) {
    s.push_back(a.scale * dot(x.q[n], key(x, r.set[i])));
    if (s.back() > c) c = s.back(), r.argmax = static_cast<int64_t>(i);
  }
  for (size_t i = 0; i < r.set.size(); ++i) {
    r.e.push_back(x.gamma * std::exp(s[i] - c));
    axpy(r.e.back(), val(x, r.set[i]), r.num);
    r.den += r.e.back();
  }
  for (int64_t j = 0; j <= n - a.w; ++j) {  // linear part: keys before the window
    const double wgt = std::exp(x.cum[n] - x.cum[j]) * dot(x.fq[n], x.fk[j]);
    axpy(wgt, x.v[j], r.num);
    r.den += wgt;
  }
  return r;
}

}  // namespace

void hybrid_forward(const HybridArgs& a) {
  for (int64_t b = 0; b < a.B; ++b)
    for (int64_t h = 0; h < a.H; ++h) {
      const Head x = load(a, b, h);
      for (int64_t n = 0; n < a.T; ++n) {
        Row r = forward_row(a, x, n);
        for (double& y : r.num) y /= r.den;
        for (int64_t i = 0; i < a.dv; ++i)
          store_at(
              a.out,
              b * a.out.stride(0) + n * a.out.stride(1) + h * a.out.stride(2) + i * a.out.stride(3),
              r.num[i]);
      }
    }
}

void hybrid_backward(const HybridArgs& a) {
  const auto& g = a.grads;
  for (const TensorView* t :
       {&g.dq, &g.dk, &g.dfq, &g.dfk, &g.dv, &g.dwindow_factor, &g.dg, &g.dmeta_k, &g.dmeta_v})
    if (t->defined()) fill(*t, 0.0);
  for (int64_t b = 0; b < a.B; ++b)
    for (int64_t h = 0; h < a.H; ++h) {
      const Head x = load(a, b, h);
      const Mat dout = rows(a.dout, b, h, a.T);
      Mat dq(a.T, std::vector<double>(a.d, 0.0)), dk = dq, dfq(a.T, std::vector<double>(a.f, 0.0));
      Mat dfk = dfq, dv(a.T, std::vector<double>(a.dv, 0.0));
      Mat dmk(a.M, std::vector<double>(a.d, 0.0)), dmv(a.M, std::vector<double>(a.dv, 0.0));
      std::vector<double> dcum(a.T, 0.0);
      double dgamma = 0;
      for (int64_t n = 0; n < a.T; ++n) {
        const Row r = forward_row(a, x, n);
        // o = num / den: dnum = do / den, dden = -(do . o) / den = -(do . num) / den^2.
        std::vector<double> dnum(a.dv);
        for (int64_t i = 0; i < a.dv; ++i) dnum[i] = dout[n][i] / r.den;
        const double dden = -dot(dout[n], r.num) / (r.den * r.den);
        // Softmax set: e_i = gamma exp(s_i - c); de_i = dnum . v_i + dden.
        std::vector<double> ds(r.set.size());
        double dc = 0;
        for (size_t i = 0; i < r.set.size(); ++i) {
          const int64_t idx = r.set[i];
          const double de = dot(dnum, val(x, idx)) + dden;
          dgamma += r.e[i] * de / x.gamma;
          ds[i] = r.e[i] * de;
          dc -= ds[i];
          auto& dvi = idx < 0 ? dmv[-1 - idx] : dv[idx];
          axpy(r.e[i], dnum, dvi);
        }
        ds[r.argmax] += dc;  // c is the max logit: its gradient goes to the argmax
        for (size_t i = 0; i < r.set.size(); ++i) {
          const int64_t idx = r.set[i];
          axpy(a.scale * ds[i], key(x, idx), dq[n]);
          auto& dki = idx < 0 ? dmk[-1 - idx] : dk[idx];
          axpy(a.scale * ds[i], x.q[n], dki);
        }
        // Linear part: wgt = exp(cum_n - cum_j) (fq_n . fk_j).
        for (int64_t j = 0; j <= n - a.w; ++j) {
          const double decay = std::exp(x.cum[n] - x.cum[j]);
          const double dt = dot(x.fq[n], x.fk[j]), wgt = decay * dt;
          const double dw = dot(dnum, x.v[j]) + dden;
          axpy(wgt, dnum, dv[j]);
          axpy(decay * dw, x.fk[j], dfq[n]);
          axpy(decay * dw, x.fq[n], dfk[j]);
          dcum[n] += wgt * dw;
          dcum[j] -= wgt * dw;
        }
      }
      for (int64_t t = 0; t < a.T; ++t) {
        add_row(g.dq, b, t, h, dq[t]);
        add_row(g.dk, b, t, h, dk[t]);
        add_row(g.dfq, b, t, h, dfq[t]);
        add_row(g.dfk, b, t, h, dfk[t]);
        add_row(g.dv, b, t, h, dv[t]);
      }
      if (g.dg.defined()) {  // cum_t = sum_{r <= t} g_r: dg_r = sum_{t >= r} dcum_t
        double acc = 0;
        for (int64_t t = a.T - 1; t >= 0; --t) {
          acc += dcum[t];
          store_at(g.dg, b * g.dg.stride(0) + t * g.dg.stride(1) + h * g.dg.stride(2), acc);
        }
      }
      if (g.dwindow_factor.defined()) {  // d gamma / d wf = gamma (1 - gamma)
        const int64_t off = h * g.dwindow_factor.stride(0);
        store_at(g.dwindow_factor, off,
                 load_at(g.dwindow_factor, off) + dgamma * x.gamma * (1 - x.gamma));
      }
      for (int64_t m = 0; m < a.M; ++m) {
        for (int64_t i = 0; i < a.d && g.dmeta_k.defined(); ++i) {
          const int64_t off =
              h * g.dmeta_k.stride(0) + m * g.dmeta_k.stride(1) + i * g.dmeta_k.stride(2);
          store_at(g.dmeta_k, off, load_at(g.dmeta_k, off) + dmk[m][i]);
        }
        for (int64_t i = 0; i < a.dv && g.dmeta_v.defined(); ++i) {
          const int64_t off =
              h * g.dmeta_v.stride(0) + m * g.dmeta_v.stride(1) + i * g.dmeta_v.stride(2);
          store_at(g.dmeta_v, off, load_at(g.dmeta_v, off) + dmv[m][i]);
        }
      }
    }
}

}  // namespace subq::ref
