// Public feature-map entry points: validation, then the float64 reference or the fast path; and
// the parameter initialisers (FAVOR+'s projection, Hedgehog's truncated identity).
#include "subq/feature_maps.h"

#include <cmath>
#include <vector>

#include "src/checks.h"
#include "src/cpu/feature_maps_cpu.h"
#include "src/feature_maps_args.h"
#include "src/ref/feature_maps_ref.h"
#include "subq/error.h"
#include "subq/random.h"

namespace subq {

namespace {

using detail::concat;
using detail::FeatureArgs;
using namespace detail::checks;  // NOLINT: the shared argument checks

constexpr std::pair<FeatureMap, std::string_view> kNames[] = {{FeatureMap::kIdentity, "identity"},
                                                              {FeatureMap::kElu1, "elu1"},
                                                              {FeatureMap::kRelu, "relu"},
                                                              {FeatureMap::kT2R, "t2r"},
                                                              {FeatureMap::kHedgehog, "hedgehog"},
                                                              {FeatureMap::kTaylor, "taylor"},
                                                              {FeatureMap::kPerformer, "performer"},
                                                              {FeatureMap::kCosformer, "cosformer"},
                                                              {FeatureMap::kDpfp, "dpfp"}};

FeatureArgs make_args(const char* where, const TensorView& x, const FeatureMapOptions& opt) {
  const bool f64 = resolve_impl(opt.impl) == Impl::kRef;
  check_input(where, "x", x, 4, f64);
  FeatureArgs a;
  a.x = x;
  a.map = opt.map;
  a.H = x.size(2);
  a.d = x.size(3);
  a.query = opt.query;
  a.nu = opt.dpfp_nu;
  const int64_t B = x.size(0), T = x.size(1);
  if (opt.cu_seqlens.defined()) {
    SUBQ_CHECK_ARG(B == 1, where, "x", "batch 1 with cu_seqlens (packed [1, sum T, H, d])", B);
    const auto cu = read_cu_seqlens(where, "cu_seqlens", opt.cu_seqlens, T);
    for (size_t n = 0; n + 1 < cu.size(); ++n) a.seqs.push_back({0, cu[n], cu[n + 1] - cu[n]});
  } else {
    for (int64_t b = 0; b < B; ++b) a.seqs.push_back({b, 0, T});
  }
  const bool learned = opt.map == FeatureMap::kT2R || opt.map == FeatureMap::kHedgehog ||
                       opt.map == FeatureMap::kPerformer;
  if (learned) {
    const char* what = opt.map == FeatureMap::kT2R        ? "[H, d', d] (t2r)"
                       : opt.map == FeatureMap::kHedgehog ? "[H, d, d'] (hedgehog)"
                                                          : "[H, m, d] (performer projection)";
    SUBQ_CHECK_ARG(opt.weight.defined(), where, "weight", concat("a tensor ", what), "none");
    check_input(where, "weight", opt.weight, 3, f64);
    SUBQ_CHECK_ARG(opt.weight.size(0) == a.H, where, "weight",
                   concat("one block per head (", a.H, ") of ", what), opt.weight.describe());
    const bool d_last = opt.map != FeatureMap::kHedgehog;  // t2r, performer: [H, feat, d]
    const int64_t dd = d_last ? opt.weight.size(2) : opt.weight.size(1);
    SUBQ_CHECK_ARG(dd == a.d, where, "weight", concat(what, " with d = ", a.d, " (x.size(3))"),
                   opt.weight.describe());
    a.feat = d_last ? opt.weight.size(1) : opt.weight.size(2);
    a.weight = opt.weight;
  } else {
    SUBQ_CHECK_ARG(!opt.weight.defined(), where, "weight",
                   concat("none for ", feature_map_name(opt.map)), "a tensor");
  }
  if (opt.map == FeatureMap::kT2R) {
    SUBQ_CHECK_ARG(opt.bias.defined(), where, "bias", concat("[", a.H, ", ", a.feat, "] (t2r)"),
                   "none");
    check_input(where, "bias", opt.bias, 2, f64);
    SUBQ_CHECK_ARG(opt.bias.sizes() == std::vector<int64_t>({a.H, a.feat}), where, "bias",
                   concat("shape [", a.H, ", ", a.feat, "]"), opt.bias.describe());
    a.bias = opt.bias;
  } else {
    SUBQ_CHECK_ARG(!opt.bias.defined(), where, "bias", "none (only t2r has a bias)", "a tensor");
  }
  if (opt.map == FeatureMap::kDpfp)
    SUBQ_CHECK_ARG(opt.dpfp_nu >= 1 && opt.dpfp_nu < 2 * a.d, where, "dpfp_nu",
                   concat("1 to 2d - 1 = ", 2 * a.d - 1), opt.dpfp_nu);
  SUBQ_CHECK_ARG(opt.max_len >= 0, where, "max_len", ">= 0 (0: the longest sequence)", opt.max_len);
  a.M = opt.max_len;
  if (a.M == 0)
    for (const auto& s : a.seqs) a.M = std::max(a.M, s.T);
  a.M = std::max<int64_t>(a.M, 1);
  if (opt.map == FeatureMap::kCosformer)
    for (const auto& s : a.seqs)
      SUBQ_CHECK_ARG(s.T <= a.M, where, "max_len", concat(">= every sequence length (", s.T, ")"),
                     a.M);
  a.dout_dim = feature_map_dim(opt, a.d);
  return a;
}

}  // namespace

std::string_view feature_map_name(FeatureMap m) {
  for (const auto& [k, name] : kNames)
    if (k == m) return name;
  return "?";
}

FeatureMap feature_map_from_name(std::string_view name) {
  for (const auto& [k, n] : kNames)
    if (n == name) return k;
  throw_arg_error("feature_map_from_name", "name",
                  "identity, elu1, relu, t2r, hedgehog, taylor, performer, cosformer or dpfp",
                  concat('"', name, '"'));
}

int64_t feature_map_dim(const FeatureMapOptions& opt, int64_t d) {
  switch (opt.map) {
    case FeatureMap::kIdentity:
    case FeatureMap::kElu1:
    case FeatureMap::kRelu:
      return d;
    case FeatureMap::kT2R:
      return opt.weight.defined() ? opt.weight.size(1) : d;
    case FeatureMap::kHedgehog:
      return opt.weight.defined() ? 2 * opt.weight.size(2) : 2 * d;
    case FeatureMap::kTaylor:
      return 1 + d + d * d;
    case FeatureMap::kPerformer:
      return opt.weight.defined() ? opt.weight.size(1) : performer_default_features(d);
    case FeatureMap::kCosformer:
      return 2 * d;
    case FeatureMap::kDpfp:
      return 2 * d * opt.dpfp_nu;
  }
  return d;
}

void feature_map_forward(const TensorView& x, const TensorView& out, const FeatureMapOptions& opt) {
  const char* where = "feature_map_forward";
  FeatureArgs a = make_args(where, x, opt);
  const bool f64 = resolve_impl(opt.impl) == Impl::kRef;
  check_output(where, "out", out, {x.size(0), x.size(1), a.H, a.dout_dim}, f64);
  a.out = out;
  if (f64) return ref::feature_map_forward(a);
  cpu::feature_map_forward(a);
}

void feature_map_backward(const TensorView& x, const TensorView& dout, const FeatureMapGrads& grads,
                          const FeatureMapOptions& opt) {
  const char* where = "feature_map_backward";
  FeatureArgs a = make_args(where, x, opt);
  const bool f64 = resolve_impl(opt.impl) == Impl::kRef;
  check_output(where, "dout", dout, {x.size(0), x.size(1), a.H, a.dout_dim}, f64);
  check_output(where, "dx", grads.dx, x.sizes(), f64);
  if (grads.dweight.defined()) {
    SUBQ_CHECK_ARG(opt.map == FeatureMap::kT2R || opt.map == FeatureMap::kHedgehog, where,
                   "dweight", "none (only t2r and hedgehog learn a weight)", "a tensor");
    check_output(where, "dweight", grads.dweight, opt.weight.sizes(), f64);
  }
  if (grads.dbias.defined()) {
    SUBQ_CHECK_ARG(opt.map == FeatureMap::kT2R, where, "dbias", "none (only t2r has a bias)",
                   "a tensor");
    check_output(where, "dbias", grads.dbias, opt.bias.sizes(), f64);
  }
  a.dout = dout;
  a.grads = grads;
  if (f64) return ref::feature_map_backward(a);
  if (opt.cu_seqlens.defined()) fill(grads.dx, 0.0);  // rows no sequence covers
  cpu::feature_map_backward(a);
}

int64_t performer_default_features(int64_t d) {
  SUBQ_CHECK_ARG(d >= 1, "performer_default_features", "d", ">= 1", d);
  return std::max<int64_t>(1,
                           static_cast<int64_t>(std::floor(d * std::log(static_cast<double>(d)))));
}

Tensor performer_projection(int64_t H, int64_t m, int64_t d, uint64_t seed) {
  SUBQ_CHECK_ARG(H >= 1 && m >= 1 && d >= 1, "performer_projection", "H, m, d", "all >= 1", H, ", ",
                 m, ", ", d);
  Tensor w = Tensor::empty({H, m, d}, DType::kF32);
  float* p = w.data_as<float>();
  Rng rng(seed);
  std::vector<double> block(d * d);
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t r0 = 0; r0 < m; r0 += d) {
      // d orthonormal rows: Gram-Schmidt of a Gaussian matrix (a QR factorisation's Q).
      for (double& x : block) x = rng.normal();
      for (int64_t i = 0; i < d; ++i) {
        double* ri = &block[i * d];
        for (int64_t j = 0; j < i; ++j) {
          const double* rj = &block[j * d];
          double dot = 0;
          for (int64_t k = 0; k < d; ++k) dot += ri[k] * rj[k];
          for (int64_t k = 0; k < d; ++k) ri[k] -= dot * rj[k];
        }
        double n = 0;
        for (int64_t k = 0; k < d; ++k) n += ri[k] * ri[k];
        n = std::sqrt(n);
        for (int64_t k = 0; k < d; ++k) ri[k] /= n;
      }
      // Each row rescaled to the norm of a fresh d-dim Gaussian vector (FAVOR+'s scaling).
      for (int64_t i = 0; i < d && r0 + i < m; ++i) {
        double n = 0;
        for (int64_t k = 0; k < d; ++k) {
          const double g = rng.normal();
          n += g * g;
        }
        n = std::sqrt(n);
        for (int64_t k = 0; k < d; ++k)
          p[(h * m + r0 + i) * d + k] = static_cast<float>(block[i * d + k] * n);
      }
    }
  }
  return w;
}

Tensor hedgehog_identity(int64_t H, int64_t d, int64_t d_feat) {
  SUBQ_CHECK_ARG(H >= 1 && d >= 1 && d_feat >= 1, "hedgehog_identity", "H, d, d'", "all >= 1", H,
                 ", ", d, ", ", d_feat);
  Tensor w = Tensor::zeros({H, d, d_feat}, DType::kF32);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < std::min(d, d_feat); ++i)
      w.data_as<float>()[(h * d + i) * d_feat + i] = 1.f;
  return w;
}

}  // namespace subq
