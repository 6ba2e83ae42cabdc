// Internal: a validated hybrid-attention problem (src/hybrid.cc builds it).
#pragma once

#include <cstdint>
#include <vector>

#include "src/row_ptr.h"
#include "subq/hybrid.h"

namespace subq::detail {

struct HybridArgs {
  TensorView q, k, fq, fk, v, out, dout;
  HybridGrads grads;
  TensorView g, meta_k, meta_v, window_factor;
  int64_t B = 0, T = 0, H = 0, d = 0, f = 0, dv = 0, w = 64, M = 0, chunk = 64;
  float scale = 1.f;
  std::vector<double> gamma;  // sigmoid(window_factor), per head
};

}  // namespace subq::detail
