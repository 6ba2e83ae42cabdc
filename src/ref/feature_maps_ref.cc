#include "src/ref/feature_maps_ref.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace subq::ref {

namespace {

using detail::FeatureArgs;
using detail::FeatureSeq;

constexpr double kHedgehogFloor = 1e-12;

std::vector<double> load_row(const TensorView& t, int64_t b, int64_t r, int64_t h) {
  std::vector<double> x(t.size(3));
  for (int64_t i = 0; i < t.size(3); ++i)
    x[i] = load_at(t, b * t.stride(0) + r * t.stride(1) + h * t.stride(2) + i * t.stride(3));
  return x;
}

void store_row(const TensorView& t, int64_t b, int64_t r, int64_t h, const std::vector<double>& y) {
  for (size_t i = 0; i < y.size(); ++i)
    store_at(t, b * t.stride(0) + r * t.stride(1) + h * t.stride(2) + i * t.stride(3), y[i]);
}

double w(const FeatureArgs& a, int64_t h, int64_t i, int64_t j) {
  const TensorView& t = a.weight;
  return load_at(t, h * t.stride(0) + i * t.stride(1) + j * t.stride(2));
}

void add_w(const TensorView& t, int64_t h, int64_t i, int64_t j, double v) {
  const int64_t off = h * t.stride(0) + i * t.stride(1) + j * t.stride(2);
  store_at(t, off, load_at(t, off) + v);
}

// Performer: a_i = w_i . x^ with x^ = d^(-1/4) x.
std::vector<double> performer_logits(const FeatureArgs& a, int64_t h,
                                     const std::vector<double>& x) {
  const double s = std::pow(static_cast<double>(a.d), -0.25);
  std::vector<double> l(a.feat, 0.0);
  for (int64_t i = 0; i < a.feat; ++i)
    for (int64_t k = 0; k < a.d; ++k) l[i] += w(a, h, i, k) * s * x[k];
  return l;
}

double half_sq_norm(const FeatureArgs& a, const std::vector<double>& x) {
  const double s2 = 1.0 / std::sqrt(static_cast<double>(a.d));  // (d^(-1/4))^2
  double n = 0;
  for (double v : x) n += v * v;
  return 0.5 * s2 * n;
}

// phi(x) for one row. `pos` is the position in the sequence (cosformer); `stab` the performer
// stabiliser (ignored unless performer).
std::vector<double> phi(const FeatureArgs& a, int64_t h, const std::vector<double>& x, int64_t pos,
                        double stab) {
  const int64_t d = a.d;
  std::vector<double> y;
  switch (a.map) {
    case FeatureMap::kIdentity:
      return x;
    case FeatureMap::kElu1:
      for (double v : x) y.push_back(v > 0 ? v + 1 : std::exp(v));
      return y;
    case FeatureMap::kRelu:
      for (double v : x) y.push_back(std::max(v, 0.0));
      return y;
    case FeatureMap::kT2R:
      for (int64_t j = 0; j < a.feat; ++j) {
        double z = load_at(a.bias, h * a.bias.stride(0) + j * a.bias.stride(1));
        for (int64_t i = 0; i < d; ++i) z += w(a, h, j, i) * x[i];
        y.push_back(std::max(z, 0.0));
      }
      return y;
    case FeatureMap::kHedgehog: {
      std::vector<double> u(a.feat, 0.0);
      for (int64_t j = 0; j < a.feat; ++j)
        for (int64_t i = 0; i < d; ++i) u[j] += x[i] * w(a, h, i, j);
      for (double sign : {1.0, -1.0}) {
        double mx = -std::numeric_limits<double>::infinity(), sum = 0;
        for (double v : u) mx = std::max(mx, sign * v);
        for (double v : u) sum += std::exp(sign * v - mx);
        for (double v : u) y.push_back(std::max(std::exp(sign * v - mx) / sum, kHedgehogFloor));
      }
      return y;
    }
    case FeatureMap::kTaylor: {
      const double r = std::pow(static_cast<double>(d), -0.25),
                   q = 1.0 / (std::sqrt(2.0) * std::sqrt(static_cast<double>(d)));
      y.push_back(1.0);
      for (double v : x) y.push_back(v * r);
      for (int64_t i = 0; i < d; ++i)
        for (int64_t j = 0; j < d; ++j) y.push_back(x[i] * x[j] * q);
      return y;
    }
    case FeatureMap::kPerformer: {
      const auto l = performer_logits(a, h, x);
      const double diag = half_sq_norm(a, x), norm = 1.0 / std::sqrt(static_cast<double>(a.feat));
      for (double v : l) y.push_back(norm * std::exp(v - diag - stab));
      return y;
    }
    case FeatureMap::kCosformer: {
      const double ang = M_PI * static_cast<double>(pos) / (2.0 * static_cast<double>(a.M));
      for (double v : x) y.push_back(std::max(v, 0.0) * std::sin(ang));
      for (double v : x) y.push_back(std::max(v, 0.0) * std::cos(ang));
      return y;
    }
    case FeatureMap::kDpfp: {
      std::vector<double> xp(2 * d);
      for (int64_t i = 0; i < d; ++i) {
        xp[i] = std::max(x[i], 0.0);
        xp[d + i] = std::max(-x[i], 0.0);
      }
      const int64_t n = 2 * d;
      for (int64_t j = 1; j <= a.nu; ++j)
        for (int64_t k = 0; k < n; ++k) y.push_back(xp[k] * xp[((k - j) % n + n) % n]);
      return y;
    }
  }
  return y;
}

// Performer stabilisers of a sequence's rows: each row's max logit (queries), or the max over
// the sequence (keys), with the argmax (row, feature) for the backward.
struct Stab {
  std::vector<double> value;     // per row
  std::vector<int64_t> arg_row;  // the row whose logit is the max
  std::vector<int64_t> arg_feat;
};

Stab stabilisers(const FeatureArgs& a, const FeatureSeq& s, int64_t h) {
  Stab st;
  double best = -std::numeric_limits<double>::infinity();
  int64_t br = 0, bf = 0;
  for (int64_t t = 0; t < s.T; ++t) {
    const auto l = performer_logits(a, h, load_row(a.x, s.batch, s.start + t, h));
    const auto it = std::max_element(l.begin(), l.end());
    st.value.push_back(*it);
    st.arg_row.push_back(t);
    st.arg_feat.push_back(it - l.begin());
    if (*it > best) best = *it, br = t, bf = it - l.begin();
  }
  if (!a.query)
    for (int64_t t = 0; t < s.T; ++t) st.value[t] = best, st.arg_row[t] = br, st.arg_feat[t] = bf;
  return st;
}

}  // namespace

void feature_map_forward(const FeatureArgs& a) {
  for (const FeatureSeq& s : a.seqs)
    for (int64_t h = 0; h < a.H; ++h) {
      Stab st;
      if (a.map == FeatureMap::kPerformer) st = stabilisers(a, s, h);
      for (int64_t t = 0; t < s.T; ++t) {
        const auto x = load_row(a.x, s.batch, s.start + t, h);
        store_row(a.out, s.batch, s.start + t, h,
                  phi(a, h, x, t, st.value.empty() ? 0.0 : st.value[t]));
      }
    }
}

void feature_map_backward(const FeatureArgs& a) {
  const auto& g = a.grads;
  for (const TensorView* t : {&g.dx, &g.dweight, &g.dbias})
    if (t->defined()) fill(*t, 0.0);
  const int64_t d = a.d;
  for (const FeatureSeq& s : a.seqs)
    for (int64_t h = 0; h < a.H; ++h) {
      Stab st;
      if (a.map == FeatureMap::kPerformer) st = stabilisers(a, s, h);
      std::vector<std::vector<double>> dxs(s.T, std::vector<double>(d, 0.0));
      for (int64_t t = 0; t < s.T; ++t) {
        const auto x = load_row(a.x, s.batch, s.start + t, h);
        const auto dy = load_row(a.dout, s.batch, s.start + t, h);
        std::vector<double>& dx = dxs[t];
        switch (a.map) {
          case FeatureMap::kIdentity:
            dx = dy;
            break;
          case FeatureMap::kElu1:
            for (int64_t i = 0; i < d; ++i) dx[i] = dy[i] * (x[i] > 0 ? 1.0 : std::exp(x[i]));
            break;
          case FeatureMap::kRelu:
            for (int64_t i = 0; i < d; ++i) dx[i] = x[i] > 0 ? dy[i] : 0.0;
            break;
          case FeatureMap::kT2R:
            for (int64_t j = 0; j < a.feat; ++j) {
              double z = load_at(a.bias, h * a.bias.stride(0) + j * a.bias.stride(1));
              for (int64_t i = 0; i < d; ++i) z += w(a, h, j, i) * x[i];
              const double dz = z > 0 ? dy[j] : 0.0;
              for (int64_t i = 0; i < d; ++i) {
                dx[i] += w(a, h, j, i) * dz;
                if (g.dweight.defined()) add_w(g.dweight, h, j, i, dz * x[i]);
              }
              if (g.dbias.defined()) {
                const int64_t off = h * g.dbias.stride(0) + j * g.dbias.stride(1);
                store_at(g.dbias, off, load_at(g.dbias, off) + dz);
              }
            }
            break;
          case FeatureMap::kHedgehog: {
            const auto y = phi(a, h, x, t, 0.0);
            std::vector<double> du(a.feat, 0.0);
            for (int sign = 0; sign < 2; ++sign) {
              const double* p = &y[sign * a.feat];
              double dot = 0;
              std::vector<double> dp(a.feat);
              for (int64_t j = 0; j < a.feat; ++j) {
                dp[j] = p[j] > kHedgehogFloor ? dy[sign * a.feat + j] : 0.0;  // through the clamp
                dot += p[j] * dp[j];
              }
              for (int64_t j = 0; j < a.feat; ++j)
                du[j] += (sign ? -1.0 : 1.0) * p[j] * (dp[j] - dot);
            }
            for (int64_t j = 0; j < a.feat; ++j)
              for (int64_t i = 0; i < d; ++i) {
                dx[i] += w(a, h, i, j) * du[j];
                if (g.dweight.defined()) add_w(g.dweight, h, i, j, x[i] * du[j]);
              }
            break;
          }
          case FeatureMap::kTaylor: {
            const double r = std::pow(static_cast<double>(d), -0.25),
                         q = 1.0 / (std::sqrt(2.0) * std::sqrt(static_cast<double>(d)));
            for (int64_t k = 0; k < d; ++k) {
              dx[k] = dy[1 + k] * r;
              for (int64_t j = 0; j < d; ++j)
                dx[k] += (dy[1 + d + k * d + j] + dy[1 + d + j * d + k]) * x[j] * q;
            }
            break;
          }
          case FeatureMap::kPerformer: {
            const auto y = phi(a, h, x, t, st.value[t]);
            const double s = std::pow(static_cast<double>(d), -0.25);
            double dsum = 0;  // sum_i dy_i y_i: minus the gradient of diag and of stab
            std::vector<double> dxh(d, 0.0);
            for (int64_t i = 0; i < a.feat; ++i) {
              const double da = dy[i] * y[i];
              dsum += da;
              for (int64_t k = 0; k < d; ++k) dxh[k] += da * w(a, h, i, k);
            }
            for (int64_t k = 0; k < d; ++k) dxh[k] -= dsum * s * x[k];  // d(|x^|^2/2)/dx^ = x^
            for (int64_t k = 0; k < d; ++k) dx[k] += s * dxh[k];
            // The stabiliser is a max: its gradient goes to the argmax logit's row.
            auto& dxa = dxs[st.arg_row[t]];
            for (int64_t k = 0; k < d; ++k) dxa[k] -= dsum * s * w(a, h, st.arg_feat[t], k);
            break;
          }
          case FeatureMap::kCosformer: {
            const double ang = M_PI * static_cast<double>(t) / (2.0 * static_cast<double>(a.M));
            for (int64_t i = 0; i < d; ++i)
              dx[i] = x[i] > 0 ? dy[i] * std::sin(ang) + dy[d + i] * std::cos(ang) : 0.0;
            break;
          }
          case FeatureMap::kDpfp: {
            const int64_t n = 2 * d;
            std::vector<double> xp(n), dxp(n, 0.0);
            for (int64_t i = 0; i < d; ++i) {
              xp[i] = std::max(x[i], 0.0);
              xp[d + i] = std::max(-x[i], 0.0);
            }
            for (int64_t j = 1; j <= a.nu; ++j) {
              const double* dyj = &dy[(j - 1) * n];
              for (int64_t k = 0; k < n; ++k) {
                const int64_t src = ((k - j) % n + n) % n;
                dxp[k] += dyj[k] * xp[src];
                dxp[src] += dyj[k] * xp[k];
              }
            }
            for (int64_t i = 0; i < d; ++i)
              dx[i] = (x[i] > 0 ? dxp[i] : 0.0) - (x[i] < 0 ? dxp[d + i] : 0.0);
            break;
          }
        }
      }
      for (int64_t t = 0; t < s.T; ++t) store_row(g.dx, s.batch, s.start + t, h, dxs[t]);
    }
}

}  // namespace subq::ref
