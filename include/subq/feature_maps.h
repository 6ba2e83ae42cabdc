// Feature maps phi applied to q and k before linear attention (see docs/feature_maps.md), as
// separate ops with backward; learned parameters (t2r, hedgehog) get gradients.
//
//   identity   x                                                       d
//   elu1       elu(x) + 1                                              d
//   relu       max(x, 0)                                               d
//   t2r        relu(W x + b),            W [H, d', d], b [H, d']       d'
//   hedgehog   [softmax(u), softmax(-u)] u = x W, W [H, d, d']         2 d'   (clamped >= 1e-12)
//   taylor     [1, x / d^(1/4), vec(x x^T) / (sqrt(2) sqrt(d))]        1 + d + d^2  (BASED)
//   performer  m^(-1/2) exp(w_i . x^ - |x^|^2 / 2 - stab), x^ = d^(-1/4) x     m   (FAVOR+)
//   cosformer  [relu(x) sin(pi i / 2M), relu(x) cos(pi i / 2M)] at position i  2 d
//   dpfp       [x', x' o roll(x', 1), ..., x' o roll(x', nu)] without the first, x' = [relu(x),
//              relu(-x)]: concat over j = 1..nu of x' o roll(x', j)      2 d nu
//
// Each learned map has its own parameters per head (dim 0 of weight), untied between q and k.
#pragma once

#include <cstdint>
#include <string_view>

#include "subq/backend.h"
#include "subq/tensor.h"

namespace subq {

enum class FeatureMap {
  kIdentity,
  kElu1,
  kRelu,
  kT2R,
  kHedgehog,
  kTaylor,
  kPerformer,
  kCosformer,
  kDpfp
};

std::string_view feature_map_name(FeatureMap m);
FeatureMap feature_map_from_name(std::string_view name);  // throws subq::Error on an unknown one

struct FeatureMapOptions {
  FeatureMap map = FeatureMap::kIdentity;
  // t2r: W [H, d', d] and b [H, d']; hedgehog: W [H, d, d']; performer: the projection
  // omega [H, m, d] (fixed, see performer_projection: it gets no gradient).
  TensorView weight;
  TensorView bias;
  // performer: the stabiliser is each row's max for queries, the max over the whole sequence
  // (per head) for keys.
  bool query = true;
  // cosformer: M, the position scale; 0 means the longest sequence of the call.
  int64_t max_len = 0;
  // dpfp: the number of rolled copies.
  int64_t dpfp_nu = 1;
  // Varlen (positions for cosformer, the key stabiliser for performer): int32/int64 [N + 1].
  TensorView cu_seqlens;
  Impl impl = Impl::kAuto;
};

// The output feature size for input head dim d (and the options' parameters).
int64_t feature_map_dim(const FeatureMapOptions& opt, int64_t d);

// x [B, T, H, d] f32 | bf16 | f16; out [B, T, H, feature_map_dim] (written).
void feature_map_forward(const TensorView& x, const TensorView& out, const FeatureMapOptions& opt);

struct FeatureMapGrads {
  TensorView dx;       // like x (required)
  TensorView dweight;  // like weight (t2r, hedgehog; optional)
  TensorView dbias;    // like bias (t2r; optional)
};

void feature_map_backward(const TensorView& x, const TensorView& dout, const FeatureMapGrads& grads,
                          const FeatureMapOptions& opt);

// FAVOR+'s projection: per head, m rows from blocks of d orthogonal Gaussian directions (QR of a
// seeded Gaussian matrix), each row rescaled to the norm of a d-dim Gaussian vector. f32 [H, m, d].
Tensor performer_projection(int64_t H, int64_t m, int64_t d, uint64_t seed);
// The default m: floor(d ln d).
int64_t performer_default_features(int64_t d);

// Hedgehog's initial weight: a truncated identity, W[h][i][j] = (i == j), f32 [H, d, d'].
Tensor hedgehog_identity(int64_t H, int64_t d, int64_t d_feat);

}  // namespace subq
