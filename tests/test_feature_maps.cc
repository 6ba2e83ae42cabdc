// Feature maps: every map's float64 reference against finite differences (x and the learned
// parameters), the fast path against the reference, the identities that define some maps, and
// bad input.
#include <gtest/gtest.h>

#include <cmath>

#include "subq/error.h"
#include "subq/feature_maps.h"
#include "subq/linear.h"
#include "tests/test_util.h"

namespace subq {
namespace {

using test::randn;
using test::rel_rms;

struct MapCase {
  FeatureMap map;
  bool query = true;
  int64_t feat = 3, nu = 2;
};

// Options (and the parameters they point to) for a map on head dim d with H heads.
struct MapSetup {
  FeatureMapOptions opt;
  Tensor weight, bias;
  MapSetup(const MapCase& c, int64_t H, int64_t d, DType pdt, uint64_t seed) {
    opt.map = c.map;
    opt.query = c.query;
    opt.dpfp_nu = c.nu;
    if (c.map == FeatureMap::kT2R) {
      weight = randn({H, c.feat, d}, pdt, seed, 0.5);
      bias = randn({H, c.feat}, pdt, seed + 1, 0.3);
    } else if (c.map == FeatureMap::kHedgehog) {
      weight = randn({H, d, c.feat}, pdt, seed, 0.5);
    } else if (c.map == FeatureMap::kPerformer) {
      weight = Tensor::copy_of(performer_projection(H, c.feat, d, seed), pdt);
    }
    opt.weight = weight;
    opt.bias = bias;
  }
};

const MapCase kMaps[] = {{FeatureMap::kIdentity},
                         {FeatureMap::kElu1},
                         {FeatureMap::kRelu},
                         {FeatureMap::kT2R, true, 5},
                         {FeatureMap::kHedgehog, true, 5},
                         {FeatureMap::kTaylor},
                         {FeatureMap::kPerformer, true, 7},
                         {FeatureMap::kPerformer, false, 7},
                         {FeatureMap::kCosformer},
                         {FeatureMap::kDpfp, true, 3, 3}};

std::string label(const MapCase& c) {
  return std::string(feature_map_name(c.map)) +
         (c.map == FeatureMap::kPerformer ? (c.query ? "_q" : "_k") : "");
}

class FeatureMapRef : public ::testing::TestWithParam<MapCase> {};

TEST_P(FeatureMapRef, FiniteDifferences) {
  const MapCase& c = GetParam();
  const int64_t B = 2, T = 5, H = 2, d = 4;
  Tensor x = randn({B, T, H, d}, DType::kF64, 11);
  MapSetup s(c, H, d, DType::kF64, 3);
  s.opt.impl = Impl::kRef;
  const int64_t n = feature_map_dim(s.opt, d);
  Tensor dy = randn({B, T, H, n}, DType::kF64, 12);
  auto loss = [&] {
    Tensor y = Tensor::empty({B, T, H, n}, DType::kF64);
    feature_map_forward(x, y, s.opt);
    const auto a = test::values(y), b = test::values(dy);
    double acc = 0;
    for (size_t i = 0; i < a.size(); ++i) acc += a[i] * b[i];
    return acc;
  };
  Tensor dx = Tensor::empty(x.sizes(), DType::kF64), dw, db;
  FeatureMapGrads g;
  g.dx = dx;
  if (c.map == FeatureMap::kT2R || c.map == FeatureMap::kHedgehog)
    g.dweight = dw = Tensor::empty(s.weight.sizes(), DType::kF64);
  if (c.map == FeatureMap::kT2R) g.dbias = db = Tensor::empty(s.bias.sizes(), DType::kF64);
  feature_map_backward(x, dy, g, s.opt);
  std::vector<std::pair<Tensor*, Tensor*>> params = {{&x, &dx}};
  if (dw.defined()) params.push_back({&s.weight, &dw});
  if (db.defined()) params.push_back({&s.bias, &db});
  for (auto [p, gp] : params) {
    const auto analytic = test::values(*gp);
    std::vector<double> numeric(analytic.size());
    for (int64_t i = 0; i < p->numel(); ++i) {
      const double v = load_at(*p, i), eps = 1e-6;
      store_at(*p, i, v + eps);
      const double up = loss();
      store_at(*p, i, v - eps);
      const double down = loss();
      store_at(*p, i, v);
      numeric[i] = (up - down) / (2 * eps);
    }
    EXPECT_LE(rel_rms(analytic, numeric), 1e-6) << label(c);
  }
}

INSTANTIATE_TEST_SUITE_P(Maps, FeatureMapRef, ::testing::ValuesIn(kMaps),
                         [](const auto& info) { return label(info.param); });

class FeatureMapFast : public ::testing::TestWithParam<MapCase> {};

TEST_P(FeatureMapFast, MatchesReference) {
  MapCase c = GetParam();
  if (c.map != FeatureMap::kTaylor) c.feat = c.map == FeatureMap::kPerformer ? 70 : 24;
  const int64_t B = 2, T = 37, H = 3, d = c.map == FeatureMap::kTaylor ? 16 : 20;
  Tensor x = randn({B, T, H, d}, DType::kF32, 21);
  MapSetup s(c, H, d, DType::kF32, 5);
  const int64_t n = feature_map_dim(s.opt, d);
  Tensor y = Tensor::empty({B, T, H, n}, DType::kF32),
         yr = Tensor::empty({B, T, H, n}, DType::kF32);
  feature_map_forward(x, y, s.opt);
  FeatureMapOptions ref = s.opt;
  ref.impl = Impl::kRef;
  feature_map_forward(x, yr, ref);
  EXPECT_LE(rel_rms(y, yr), 1e-5) << label(c);
  Tensor dy = randn({B, T, H, n}, DType::kF32, 22);
  auto grads = [&](const FeatureMapOptions& o, Tensor& dx, Tensor& dw, Tensor& db) {
    dx = Tensor::empty(x.sizes(), DType::kF32);
    FeatureMapGrads g;
    g.dx = dx;
    if (c.map == FeatureMap::kT2R || c.map == FeatureMap::kHedgehog)
      g.dweight = dw = Tensor::empty(s.weight.sizes(), DType::kF32);
    if (c.map == FeatureMap::kT2R) g.dbias = db = Tensor::empty(s.bias.sizes(), DType::kF32);
    feature_map_backward(x, dy, g, o);
  };
  Tensor dx, dw, db, rdx, rdw, rdb;
  grads(s.opt, dx, dw, db);
  grads(ref, rdx, rdw, rdb);
  EXPECT_LE(rel_rms(dx, rdx), 1e-5) << label(c);
  if (dw.defined()) {
    EXPECT_LE(rel_rms(dw, rdw), 1e-5) << label(c);
  }
  if (db.defined()) {
    EXPECT_LE(rel_rms(db, rdb), 1e-5) << label(c);
  }
}

INSTANTIATE_TEST_SUITE_P(Maps, FeatureMapFast, ::testing::ValuesIn(kMaps),
                         [](const auto& info) { return label(info.param); });

double dot(const std::vector<double>& a, size_t ia, const std::vector<double>& b, size_t ib,
           int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[ia + i] * b[ib + i];
  return s;
}

TEST(FeatureMaps, TaylorKernelIdentity) {
  // phi(q) . phi(k) = 1 + q.k / sqrt(d) + (q.k)^2 / (2 d)
  const int64_t d = 8, n = 1 + d + d * d;
  Tensor q = randn({1, 1, 1, d}, DType::kF32, 1), k = randn({1, 1, 1, d}, DType::kF32, 2);
  FeatureMapOptions o;
  o.map = FeatureMap::kTaylor;
  Tensor pq = Tensor::empty({1, 1, 1, n}, DType::kF32),
         pk = Tensor::empty({1, 1, 1, n}, DType::kF32);
  feature_map_forward(q, pq, o);
  feature_map_forward(k, pk, o);
  const auto a = test::values(pq), b = test::values(pk), qv = test::values(q), kv = test::values(k);
  const double qk = dot(qv, 0, kv, 0, d);
  EXPECT_NEAR(dot(a, 0, b, 0, n), 1 + qk / std::sqrt(d) + qk * qk / (2.0 * d), 1e-5);
}

TEST(FeatureMaps, HedgehogHalvesAreDistributionsAndInitIsIdentity) {
  const int64_t H = 2, d = 8, f = 4;
  Tensor x = randn({1, 3, H, d}, DType::kF32, 1);
  Tensor w = hedgehog_identity(H, d, f);
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < f; ++j) EXPECT_EQ(get_element(w, {1, i, j}), i == j ? 1.0 : 0.0);
  FeatureMapOptions o;
  o.map = FeatureMap::kHedgehog;
  o.weight = w;
  Tensor y = Tensor::empty({1, 3, H, 2 * f}, DType::kF32);
  feature_map_forward(x, y, o);
  for (int64_t t = 0; t < 3; ++t)
    for (int64_t half = 0; half < 2; ++half) {
      double s = 0;
      for (int64_t j = 0; j < f; ++j) s += get_element(y, {0, t, 1, half * f + j});
      EXPECT_NEAR(s, 1.0, 1e-6);
    }
  // With the truncated identity, u = x[:f]: the first half is softmax(x[:f]).
  double z = 0;
  for (int64_t j = 0; j < f; ++j) z += std::exp(get_element(x, {0, 0, 0, j}));
  EXPECT_NEAR(get_element(y, {0, 0, 0, 0}), std::exp(get_element(x, {0, 0, 0, 0})) / z, 1e-6);
}

TEST(FeatureMaps, PerformerProjectionIsBlockOrthogonalAndEstimatesSoftmaxKernel) {
  const int64_t d = 16, m = 4096;
  Tensor w = performer_projection(1, m, d, 7);
  const auto v = test::values(w);
  // Rows of one block are orthogonal.
  EXPECT_NEAR(dot(v, 0, v, d, d), 0.0, 1e-3);
  EXPECT_NEAR(dot(v, 3 * d, v, 9 * d, d), 0.0, 1e-3);
  // phi(q) . phi(k) exp(stab_q + stab_k) estimates exp(q.k / sqrt(d)) (unbiased; m large).
  Tensor q = randn({1, 1, 1, d}, DType::kF32, 1, 0.3), k = randn({1, 1, 1, d}, DType::kF32, 2, 0.3);
  FeatureMapOptions o;
  o.map = FeatureMap::kPerformer;
  o.weight = w;
  Tensor pq = Tensor::empty({1, 1, 1, m}, DType::kF32),
         pk = Tensor::empty({1, 1, 1, m}, DType::kF32);
  feature_map_forward(q, pq, o);
  o.query = false;
  feature_map_forward(k, pk, o);
  // Recover the stabilisers: the max logit of each row.
  auto max_logit = [&](const Tensor& x) {
    double best = -1e30;
    const auto xv = test::values(x);
    for (int64_t i = 0; i < m; ++i)
      best = std::max(best, dot(v, i * d, xv, 0, d) * std::pow(d, -0.25));
    return best;
  };
  const double est =
      dot(test::values(pq), 0, test::values(pk), 0, m) * std::exp(max_logit(q) + max_logit(k));
  const double exact = std::exp(dot(test::values(q), 0, test::values(k), 0, d) / std::sqrt(d));
  EXPECT_NEAR(est / exact, 1.0, 0.05);
}

TEST(FeatureMaps, NonCausalNormalizedLinearAttentionOverMaps) {
  // The vision form: phi(q), phi(k), then one global state: o_t = phi(q_t)^T S / phi(q_t)^T z.
  const int64_t B = 2, T = 30, H = 2, d = 8;
  Tensor q = randn({B, T, H, d}, DType::kF32, 1), k = randn({B, T, H, d}, DType::kF32, 2);
  Tensor v = randn({B, T, H, d}, DType::kF32, 3);
  for (FeatureMap m : {FeatureMap::kElu1, FeatureMap::kRelu, FeatureMap::kCosformer}) {
    FeatureMapOptions o;
    o.map = m;
    const int64_t n = feature_map_dim(o, d);
    Tensor pq = Tensor::empty({B, T, H, n}, DType::kF32),
           pk = Tensor::empty({B, T, H, n}, DType::kF32);
    feature_map_forward(q, pq, o);
    feature_map_forward(k, pk, o);
    LinearAttentionOptions lo;
    lo.causal = false;
    lo.normalize = true;
    Tensor out = Tensor::empty({B, T, H, d}, DType::kF32);
    linear_attention_forward(pq, pk, v, out, {}, {}, lo);
    // Direct: o_t = sum_s (phi_q . phi_k_s) v_s / sum_s phi_q . phi_k_s.
    double worst = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t t = 0; t < T; t += 7) {
          std::vector<double> num(d, 0.0);
          double den = 1e-6;
          for (int64_t s = 0; s < T; ++s) {
            double w = 0;
            for (int64_t i = 0; i < n; ++i)
              w += get_element(pq, {b, t, h, i}) * get_element(pk, {b, s, h, i});
            den += w;
            for (int64_t j = 0; j < d; ++j) num[j] += w * get_element(v, {b, s, h, j});
          }
          for (int64_t j = 0; j < d; ++j)
            worst = std::max(worst, std::abs(num[j] / den - get_element(out, {b, t, h, j})));
        }
    EXPECT_LE(worst, 1e-4) << feature_map_name(m);
  }
}

TEST(FeatureMaps, BadInput) {
  Tensor x = randn({1, 4, 2, 8}, DType::kF32, 1);
  FeatureMapOptions o;
  o.map = FeatureMap::kT2R;
  Tensor y = Tensor::empty({1, 4, 2, 8}, DType::kF32);
  EXPECT_THROW(feature_map_forward(x, y, o), Error);  // no weight
  Tensor w = randn({3, 5, 8}, DType::kF32, 1), b = randn({2, 5}, DType::kF32, 2);
  o.weight = w;
  o.bias = b;
  EXPECT_THROW(feature_map_forward(x, y, o), Error);  // 3 heads of weights for 2
  FeatureMapOptions r;
  r.map = FeatureMap::kRelu;
  r.bias = b;
  EXPECT_THROW(feature_map_forward(x, y, r), Error);  // bias on relu
  FeatureMapOptions dp;
  dp.map = FeatureMap::kDpfp;
  dp.dpfp_nu = 16;
  Tensor yd = Tensor::empty({1, 4, 2, 256}, DType::kF32);
  EXPECT_THROW(feature_map_forward(x, yd, dp), Error);
  EXPECT_THROW(feature_map_from_name("softmax"), Error);
  EXPECT_EQ(feature_map_from_name("hedgehog"), FeatureMap::kHedgehog);
  FeatureMapOptions e;
  e.map = FeatureMap::kElu1;
  Tensor wrong = Tensor::empty({1, 4, 2, 9}, DType::kF32);
  EXPECT_THROW(feature_map_forward(x, wrong, e), Error);
}

}  // namespace
}  // namespace subq

namespace subq {
namespace {

TEST(FeatureMaps, Bf16Inputs) {
  for (FeatureMap m :
       {FeatureMap::kElu1, FeatureMap::kHedgehog, FeatureMap::kTaylor, FeatureMap::kPerformer}) {
    const int64_t H = 2, d = 8;
    Tensor x = test::randn({2, 10, H, d}, DType::kBF16, 3);
    FeatureMapOptions o;
    o.map = m;
    Tensor w;
    if (m == FeatureMap::kHedgehog) w = hedgehog_identity(H, d, 4);
    if (m == FeatureMap::kPerformer) w = performer_projection(H, 12, d, 1);
    o.weight = w;
    const int64_t n = feature_map_dim(o, d);
    Tensor y = Tensor::empty({2, 10, H, n}, DType::kBF16),
           yr = Tensor::empty({2, 10, H, n}, DType::kF32);
    feature_map_forward(x, y, o);
    FeatureMapOptions r = o;
    r.impl = Impl::kRef;
    feature_map_forward(x, yr, r);
    EXPECT_LE(test::rel_rms(y, yr), 5e-3) << feature_map_name(m);
  }
}

}  // namespace
}  // namespace subq
