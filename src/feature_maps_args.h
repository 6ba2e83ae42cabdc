// Internal: a validated feature-map problem (src/feature_maps.cc builds it).
#pragma once

#include <cstdint>
#include <vector>

#include "src/row_ptr.h"
#include "subq/feature_maps.h"

namespace subq::detail {

struct FeatureSeq {
  int64_t batch, start, T;
};

struct FeatureArgs {
  TensorView x, out, dout;
  FeatureMapGrads grads;
  TensorView weight, bias;
  FeatureMap map = FeatureMap::kIdentity;
  int64_t H = 0, d = 0, dout_dim = 0;
  int64_t feat = 0;  // d' (t2r, hedgehog) or m (performer)
  bool query = true;
  int64_t M = 1;  // cosformer position scale
  int64_t nu = 1;
  std::vector<FeatureSeq> seqs;
};

}  // namespace subq::detail
