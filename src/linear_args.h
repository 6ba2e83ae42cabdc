// Internal: a validated linear-attention problem, shared by the reference (src/ref) and the fast
// kernels (src/cpu). src/linear.cc builds it after checking every argument.
#pragma once

#include <cstdint>
#include <vector>

#include "src/row_ptr.h"
#include "subq/linear.h"
#include "subq/tensor.h"

namespace subq::detail {

enum class GateKind { kNone, kScalar, kConstant, kKeyDim };

struct LinearSeq {
  int64_t batch;  // index along dim 0 (0 for varlen)
  int64_t start;  // first row along dim 1
  int64_t T;
};

struct LinearArgs {
  TensorView q, k, v, out;
  TensorView h0, z0;  // initial state, z (may be undefined)
  TensorView ht, zt;  // final state, z outputs (may be undefined)
  TensorView g, g_gamma, gk, gv;
  // Backward only.
  TensorView dout, dht, dzt;
  LinearAttentionGrads grads;

  int64_t Hk = 0, H = 0, K = 0, V = 0;
  float scale = 1.f, eps = 1e-6f;
  bool normalize = false, v_first = false, causal = true, varlen = false;
  GateKind gate = GateKind::kNone;
  bool has_gv = false;
  LinearMode mode = LinearMode::kChunk;
  int64_t chunk = 64;
  std::vector<LinearSeq> seqs;

  int64_t group() const { return H / Hk; }  // value heads per key head
  // Offsets of element (state row i of K, column j of V) in a [N, H, K, V] or V-first state.
  int64_t state_offset(const TensorView& s, int64_t n, int64_t h, int64_t i, int64_t j) const {
    return n * s.stride(0) + h * s.stride(1) +
           (v_first ? j * s.stride(2) + i * s.stride(3) : i * s.stride(2) + j * s.stride(3));
  }
};

}  // namespace subq::detail
