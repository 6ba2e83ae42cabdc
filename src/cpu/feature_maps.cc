// Feature maps on the CPU, in f32, one work item per (sequence, head): the token rows of the item
// are loaded once, the projections of the learned and random-feature maps (t2r, hedgehog,
// performer) run as GEMM tiles over all the rows, and the elementwise parts loop over rows.
#include "src/cpu/feature_maps_cpu.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "src/cpu/gemm_tile.h"
#include "subq/threads.h"

namespace subq::cpu {

namespace {

using detail::FeatureArgs;
using detail::FeatureSeq;

constexpr float kHedgehogFloor = 1e-12f;

size_t round_up(size_t x, size_t m) {
  return (x + m - 1) / m * m;
}

void load_rows(const TensorView& t, const FeatureSeq& s, int64_t h, int64_t width, size_t ld,
               std::vector<float>& dst) {
  dst.assign(s.T * ld, 0.f);
  for (int64_t r = 0; r < s.T; ++r) {
    const char* p = detail::row_ptr(t, s.batch, s.start + r, h);
    for (int64_t i = 0; i < width; ++i)
      dst[r * ld + i] = static_cast<float>(load_element(p, t.dtype(), i * t.stride(3)));
  }
}

void store_rows(const TensorView& t, const FeatureSeq& s, int64_t h, int64_t width, size_t ld,
                const std::vector<float>& src) {
  for (int64_t r = 0; r < s.T; ++r) {
    char* p = detail::row_ptr(t, s.batch, s.start + r, h);
    for (int64_t i = 0; i < width; ++i)
      store_element(p, t.dtype(), i * t.stride(3), src[r * ld + i]);
  }
}

// Parameter block of head h as an f32 matrix [rows x cols] with row stride ld (zero-padded),
// optionally transposed ([cols x rows]).
std::vector<float> head_matrix(const TensorView& w, int64_t h, bool transpose, size_t ld) {
  const int64_t R = w.size(1), C = w.size(2);
  const int64_t rows = transpose ? C : R;
  std::vector<float> m(rows * ld, 0.f);
  for (int64_t i = 0; i < R; ++i)
    for (int64_t j = 0; j < C; ++j) {
      const float v =
          static_cast<float>(load_at(w, h * w.stride(0) + i * w.stride(1) + j * w.stride(2)));
      if (transpose) {
        m[j * ld + i] = v;
      } else {
        m[i * ld + j] = v;
      }
    }
  return m;
}

// C [T x N] = X [T x K] B [K x N] with N a multiple of the lane count.
void gemm(int64_t T, size_t N, int64_t K, const std::vector<float>& x, size_t ldx,
          const std::vector<float>& b, size_t ldb, std::vector<float>& c, size_t ldc) {
  c.assign(T * ldc, 0.f);
  if (T > 0)
    gemm_tile_f32(T, N, K, x.data(), ldx, 1, b.data(), ldb, c.data(), ldc, GemmInit::kOverwrite);
}

// The projection of the item's rows for the learned / random maps, and what each needs.
struct Projection {
  std::vector<float> z;  // [T x ldz]: t2r pre-activation, hedgehog u, performer logits (scaled x)
  size_t ldz = 0;
};

Projection project(const FeatureArgs& a, int64_t h, int64_t T, const std::vector<float>& x,
                   size_t ldx) {
  const size_t L = simd_lanes_f32();
  Projection p;
  p.ldz = round_up(a.feat, L);
  if (a.map == FeatureMap::kT2R) {  // z = x W^T + b, W [d' x d]
    const auto wt = head_matrix(a.weight, h, true, p.ldz);
    gemm(T, p.ldz, a.d, x, ldx, wt, p.ldz, p.z, p.ldz);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < a.feat; ++j)
        p.z[t * p.ldz + j] +=
            static_cast<float>(load_at(a.bias, h * a.bias.stride(0) + j * a.bias.stride(1)));
  } else if (a.map == FeatureMap::kHedgehog) {  // u = x W, W [d x d']
    const auto wm = head_matrix(a.weight, h, false, p.ldz);
    gemm(T, p.ldz, a.d, x, ldx, wm, p.ldz, p.z, p.ldz);
  } else if (a.map == FeatureMap::kPerformer) {  // l = (d^-1/4 x) omega^T, omega [m x d]
    const auto wt = head_matrix(a.weight, h, true, p.ldz);
    gemm(T, p.ldz, a.d, x, ldx, wt, p.ldz, p.z, p.ldz);
    const float s = std::pow(static_cast<float>(a.d), -0.25f);
    for (float& v : p.z) v *= s;
  }
  return p;
}

void forward_item(const FeatureArgs& a, const FeatureSeq& s, int64_t h) {
  const size_t L = simd_lanes_f32(), ldx = round_up(a.d, L);
  const int64_t d = a.d, T = s.T;
  std::vector<float> x;
  load_rows(a.x, s, h, d, ldx, x);
  const Projection p = project(a, h, T, x, ldx);
  const size_t ldy = a.dout_dim;
  std::vector<float> y(T * ldy, 0.f);
  // Performer stabilisers: row max (queries), sequence max (keys).
  std::vector<float> stab(T, 0.f);
  if (a.map == FeatureMap::kPerformer) {
    float best = -std::numeric_limits<float>::infinity();
    for (int64_t t = 0; t < T; ++t) {
      const float* l = &p.z[t * p.ldz];
      stab[t] = *std::max_element(l, l + a.feat);
      best = std::max(best, stab[t]);
    }
    if (!a.query) std::fill(stab.begin(), stab.end(), best);
  }
  const float r4 = std::pow(static_cast<float>(d), -0.25f);
  const float q2 = 1.f / (std::sqrt(2.f) * std::sqrt(static_cast<float>(d)));
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = &x[t * ldx];
    float* yr = &y[t * ldy];
    switch (a.map) {
      case FeatureMap::kIdentity:
        std::copy(xr, xr + d, yr);
        break;
      case FeatureMap::kElu1:
        for (int64_t i = 0; i < d; ++i) yr[i] = xr[i] > 0 ? xr[i] + 1.f : std::exp(xr[i]);
        break;
      case FeatureMap::kRelu:
        for (int64_t i = 0; i < d; ++i) yr[i] = std::max(xr[i], 0.f);
        break;
      case FeatureMap::kT2R:
        for (int64_t j = 0; j < a.feat; ++j) yr[j] = std::max(p.z[t * p.ldz + j], 0.f);
        break;
      case FeatureMap::kHedgehog: {
        const float* u = &p.z[t * p.ldz];
        for (int sign = 0; sign < 2; ++sign) {
          const float sg = sign ? -1.f : 1.f;
          float mx = -std::numeric_limits<float>::infinity(), sum = 0.f;
          for (int64_t j = 0; j < a.feat; ++j) mx = std::max(mx, sg * u[j]);
          for (int64_t j = 0; j < a.feat; ++j) sum += std::exp(sg * u[j] - mx);
          for (int64_t j = 0; j < a.feat; ++j)
            yr[sign * a.feat + j] = std::max(std::exp(sg * u[j] - mx) / sum, kHedgehogFloor);
        }
        break;
      }
      case FeatureMap::kTaylor:
        yr[0] = 1.f;
        for (int64_t i = 0; i < d; ++i) yr[1 + i] = xr[i] * r4;
        for (int64_t i = 0; i < d; ++i)
          for (int64_t j = 0; j < d; ++j) yr[1 + d + i * d + j] = xr[i] * xr[j] * q2;
        break;
      case FeatureMap::kPerformer: {
        float n2 = 0;
        for (int64_t i = 0; i < d; ++i) n2 += xr[i] * xr[i];
        const float diag = 0.5f * n2 * r4 * r4, norm = 1.f / std::sqrt(static_cast<float>(a.feat));
        for (int64_t i = 0; i < a.feat; ++i)
          yr[i] = norm * std::exp(p.z[t * p.ldz + i] - diag - stab[t]);
        break;
      }
      case FeatureMap::kCosformer: {
        const double ang = M_PI * static_cast<double>(t) / (2.0 * static_cast<double>(a.M));
        const float sn = static_cast<float>(std::sin(ang)), cs = static_cast<float>(std::cos(ang));
        for (int64_t i = 0; i < d; ++i) {
          const float rx = std::max(xr[i], 0.f);
          yr[i] = rx * sn;
          yr[d + i] = rx * cs;
        }
        break;
      }
      case FeatureMap::kDpfp: {
        const int64_t n = 2 * d;
        std::vector<float> xp(n);
        for (int64_t i = 0; i < d; ++i) {
          xp[i] = std::max(xr[i], 0.f);
          xp[d + i] = std::max(-xr[i], 0.f);
        }
        for (int64_t j = 1; j <= a.nu; ++j)
          for (int64_t k = 0; k < n; ++k) yr[(j - 1) * n + k] = xp[k] * xp[((k - j) % n + n) % n];
        break;
      }
    }
  }
  store_rows(a.out, s, h, a.dout_dim, ldy, y);
}

// Gradients of the learned parameters, per item, summed over items afterwards.
struct ParamGrads {
  std::vector<double> dw, db;
};

void backward_item(const FeatureArgs& a, const FeatureSeq& s, int64_t h, ParamGrads& pg) {
  const size_t L = simd_lanes_f32(), ldx = round_up(a.d, L);
  const int64_t d = a.d, T = s.T;
  std::vector<float> x, dy;
  load_rows(a.x, s, h, d, ldx, x);
  const size_t ldy = round_up(a.dout_dim, L);
  load_rows(a.dout, s, h, a.dout_dim, ldy, dy);
  std::vector<float> dx(T * ldx, 0.f);
  const Projection p = project(a, h, T, x, ldx);
  // dz: the gradient at the projection (t2r, hedgehog, performer), [T x ldz].
  std::vector<float> dz(T * p.ldz, 0.f);
  const float r4 = std::pow(static_cast<float>(d), -0.25f);
  const float q2 = 1.f / (std::sqrt(2.f) * std::sqrt(static_cast<float>(d)));
  std::vector<float> stab(T, 0.f);
  std::vector<int64_t> arg_row(T), arg_feat(T);
  if (a.map == FeatureMap::kPerformer) {
    float best = -std::numeric_limits<float>::infinity();
    int64_t br = 0, bf = 0;
    for (int64_t t = 0; t < T; ++t) {
      const float* l = &p.z[t * p.ldz];
      const int64_t f = std::max_element(l, l + a.feat) - l;
      stab[t] = l[f];
      arg_row[t] = t;
      arg_feat[t] = f;
      if (l[f] > best) best = l[f], br = t, bf = f;
    }
    if (!a.query)
      for (int64_t t = 0; t < T; ++t) stab[t] = best, arg_row[t] = br, arg_feat[t] = bf;
  }
  std::vector<float> stab_grad(T, 0.f);
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = &x[t * ldx];
    const float* g = &dy[t * ldy];
    float* dxr = &dx[t * ldx];
    float* dzr = dz.empty() ? nullptr : dz.data() + t * p.ldz;  // projection maps only
    switch (a.map) {
      case FeatureMap::kIdentity:
        std::copy(g, g + d, dxr);
        break;
      case FeatureMap::kElu1:
        for (int64_t i = 0; i < d; ++i) dxr[i] = g[i] * (xr[i] > 0 ? 1.f : std::exp(xr[i]));
        break;
      case FeatureMap::kRelu:
        for (int64_t i = 0; i < d; ++i) dxr[i] = xr[i] > 0 ? g[i] : 0.f;
        break;
      case FeatureMap::kT2R:
        for (int64_t j = 0; j < a.feat; ++j) dzr[j] = p.z[t * p.ldz + j] > 0 ? g[j] : 0.f;
        break;
      case FeatureMap::kHedgehog: {
        const float* u = &p.z[t * p.ldz];
        for (int sign = 0; sign < 2; ++sign) {
          const float sg = sign ? -1.f : 1.f;
          float mx = -std::numeric_limits<float>::infinity(), sum = 0.f;
          for (int64_t j = 0; j < a.feat; ++j) mx = std::max(mx, sg * u[j]);
          for (int64_t j = 0; j < a.feat; ++j) sum += std::exp(sg * u[j] - mx);
          double dot = 0;
          std::vector<float> pr(a.feat), dp(a.feat);
          for (int64_t j = 0; j < a.feat; ++j) {
            pr[j] = std::exp(sg * u[j] - mx) / sum;
            dp[j] = std::max(pr[j], kHedgehogFloor) > kHedgehogFloor ? g[sign * a.feat + j] : 0.f;
            dot += static_cast<double>(pr[j]) * dp[j];
          }
          for (int64_t j = 0; j < a.feat; ++j)
            dzr[j] += sg * pr[j] * (dp[j] - static_cast<float>(dot));
        }
        break;
      }
      case FeatureMap::kTaylor:
        for (int64_t k = 0; k < d; ++k) {
          float acc = g[1 + k] * r4;
          for (int64_t j = 0; j < d; ++j)
            acc += (g[1 + d + k * d + j] + g[1 + d + j * d + k]) * xr[j] * q2;
          dxr[k] = acc;
        }
        break;
      case FeatureMap::kPerformer: {
        float n2 = 0;
        for (int64_t i = 0; i < d; ++i) n2 += xr[i] * xr[i];
        const float diag = 0.5f * n2 * r4 * r4, norm = 1.f / std::sqrt(static_cast<float>(a.feat));
        double dsum = 0;
        for (int64_t i = 0; i < a.feat; ++i) {
          const float y = norm * std::exp(p.z[t * p.ldz + i] - diag - stab[t]);
          dzr[i] = g[i] * y;  // gradient at the logit
          dsum += dzr[i];
        }
        // Through |x^|^2 / 2 (x^ = r4 x) and through the stabiliser (a max: to its argmax).
        for (int64_t k = 0; k < d; ++k) dxr[k] -= static_cast<float>(dsum) * r4 * r4 * xr[k];
        stab_grad[t] = static_cast<float>(dsum);  // applied after the loop: the argmax row
        break;
      }
      case FeatureMap::kCosformer: {
        const double ang = M_PI * static_cast<double>(t) / (2.0 * static_cast<double>(a.M));
        const float sn = static_cast<float>(std::sin(ang)), cs = static_cast<float>(std::cos(ang));
        for (int64_t i = 0; i < d; ++i) dxr[i] = xr[i] > 0 ? g[i] * sn + g[d + i] * cs : 0.f;
        break;
      }
      case FeatureMap::kDpfp: {
        const int64_t n = 2 * d;
        std::vector<float> xp(n), dxp(n, 0.f);
        for (int64_t i = 0; i < d; ++i) {
          xp[i] = std::max(xr[i], 0.f);
          xp[d + i] = std::max(-xr[i], 0.f);
        }
        for (int64_t j = 1; j <= a.nu; ++j)
          for (int64_t k = 0; k < n; ++k) {
            const int64_t src = ((k - j) % n + n) % n;
            dxp[k] += g[(j - 1) * n + k] * xp[src];
            dxp[src] += g[(j - 1) * n + k] * xp[k];
          }
        for (int64_t i = 0; i < d; ++i)
          dxr[i] = (xr[i] > 0 ? dxp[i] : 0.f) - (xr[i] < 0 ? dxp[d + i] : 0.f);
        break;
      }
    }
  }
  if (a.map == FeatureMap::kPerformer)  // the stabiliser is a max: its gradient goes to the argmax
    for (int64_t t = 0; t < T; ++t) dz[arg_row[t] * p.ldz + arg_feat[t]] -= stab_grad[t];
  // Back through the projection: dx += dz W (t2r: W [d' x d]), dz W^T (hedgehog: W [d x d']),
  // r4 dz omega (performer); and the parameter gradients.
  if (a.map == FeatureMap::kT2R || a.map == FeatureMap::kHedgehog ||
      a.map == FeatureMap::kPerformer) {
    // B = W as [feat x ldx] rows: t2r and performer store [feat x d] already; hedgehog needs W^T.
    const auto wm = head_matrix(a.weight, h, a.map == FeatureMap::kHedgehog, ldx);
    std::vector<float> dxp;
    gemm(T, ldx, a.feat, dz, p.ldz, wm, ldx, dxp, ldx);
    const float f = a.map == FeatureMap::kPerformer ? r4 : 1.f;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t k = 0; k < d; ++k) dx[t * ldx + k] += f * dxp[t * ldx + k];
    if (a.map != FeatureMap::kPerformer && !pg.dw.empty()) {
      // t2r: dW[j][i] = sum_t dz_tj x_ti; hedgehog: dW[i][j] = sum_t x_ti dz_tj.
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < a.feat; ++j) {
          const double gz = dz[t * p.ldz + j];
          if (gz == 0) continue;
          for (int64_t i = 0; i < d; ++i) {
            const size_t idx = a.map == FeatureMap::kT2R ? j * d + i : i * a.feat + j;
            pg.dw[idx] += gz * x[t * ldx + i];
          }
        }
    }
    if (a.map == FeatureMap::kT2R && !pg.db.empty())
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < a.feat; ++j) pg.db[j] += dz[t * p.ldz + j];
  }
  store_rows(a.grads.dx, s, h, d, ldx, dx);
}

}  // namespace

void feature_map_forward(const FeatureArgs& a) {
  const int64_t items = static_cast<int64_t>(a.seqs.size()) * a.H;
  parallel_for(items, [&](int64_t i, int) { forward_item(a, a.seqs[i / a.H], i % a.H); });
}

void feature_map_backward(const FeatureArgs& a) {
  const auto& g = a.grads;
  const int64_t items = static_cast<int64_t>(a.seqs.size()) * a.H;
  const bool want_w = g.dweight.defined(), want_b = g.dbias.defined();
  const size_t wsize =
      a.weight.defined() ? static_cast<size_t>(a.weight.size(1) * a.weight.size(2)) : 0;
  std::vector<ParamGrads> pg(items);
  for (auto& p : pg) {
    if (want_w) p.dw.assign(wsize, 0.0);
    if (want_b) p.db.assign(a.feat, 0.0);
  }
  parallel_for(items, [&](int64_t i, int) { backward_item(a, a.seqs[i / a.H], i % a.H, pg[i]); });
  // Per-head parameter gradients: sum over the items of that head, in item order (so the result
  // does not depend on the thread count).
  if (want_w) fill(g.dweight, 0.0);
  if (want_b) fill(g.dbias, 0.0);
  for (int64_t i = 0; i < items; ++i) {
    const int64_t h = i % a.H;
    if (want_w) {
      const int64_t R = g.dweight.size(1), C = g.dweight.size(2);
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = 0; c < C; ++c) {
          const int64_t off =
              h * g.dweight.stride(0) + r * g.dweight.stride(1) + c * g.dweight.stride(2);
          store_at(g.dweight, off, load_at(g.dweight, off) + pg[i].dw[r * C + c]);
        }
    }
    if (want_b)
      for (int64_t j = 0; j < a.feat; ++j) {
        const int64_t off = h * g.dbias.stride(0) + j * g.dbias.stride(1);
        store_at(g.dbias, off, load_at(g.dbias, off) + pg[i].db[j]);
      }
  }
}

}  // namespace subq::cpu
