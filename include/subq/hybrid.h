// Linear + sliding-window hybrid attention (LoLCATs, BASED, Lizard), see docs/hybrid.md. Per
// head, query n, window W(n) = the last w keys including itself, Lin(n) = the keys before it:
//
//   o_n = [ sum_{i in W} gamma exp(q_n.k_i scale - c_n) v_i + phi_q(q_n)^T sum_{j in Lin} d_nj
//   phi_k(k_j) v_j^T ]
//       / [ sum_{i in W} gamma exp(q_n.k_i scale - c_n)     + phi_q(q_n)^T sum_{j in Lin} d_nj
//       phi_k(k_j)       ]
//
// c_n is the row's max window logit; the linear term is NOT rescaled by exp(-c_n) (that is the
// model, and a port must match it). gamma = sigmoid(window_factor[h]). Without a gate d_nj = 1;
// with Lizard's gate on the linear state, d_nj = exp(g_{j+1} + ... + g_n). Optional meta tokens
// (Lizard) are keys and values every query sees, inside the softmax part.
//
// The feature maps are separate ops (subq/feature_maps.h): pass phi_q(q) and phi_k(k).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "subq/backend.h"
#include "subq/tensor.h"

namespace subq {

struct HybridOptions {
  int64_t window = 64;         // w, self included
  std::optional<float> scale;  // of q . k in the window; default 1/sqrt(d)
  TensorView window_factor;    // f32 [H] (required): gamma = sigmoid(window_factor)
  TensorView g;                // [B, T, H] log gates (<= 0) on the linear state, optional
  TensorView meta_k, meta_v;   // [H, M, d] and [H, M, dv]: tokens every query sees, optional
  int64_t chunk_size = 64;     // of the linear part's chunked kernel
  Impl impl = Impl::kAuto;
};

// Initial value of window_factor for gamma = 0.1 (logit(0.1)).
inline constexpr float kHybridWindowFactorInit = -2.1972246f;

// q, k [B, T, H, d]; fq, fk [B, T, H, f] (the feature maps of q and k); v [B, T, H, dv];
// out [B, T, H, dv]. All inputs of one float dtype (f32 | bf16 | f16).
void hybrid_attention_forward(const TensorView& q, const TensorView& k, const TensorView& fq,
                              const TensorView& fk, const TensorView& v, const TensorView& out,
                              const HybridOptions& opt);

struct HybridGrads {
  TensorView dq, dk, dfq, dfk, dv;  // required, like the inputs
  TensorView dwindow_factor;        // like window_factor (optional)
  TensorView dg;                    // like g (optional)
  TensorView dmeta_k, dmeta_v;      // like meta_k / meta_v (optional)
};

void hybrid_attention_backward(const TensorView& q, const TensorView& k, const TensorView& fq,
                               const TensorView& fk, const TensorView& v, const TensorView& dout,
                               const HybridGrads& grads, const HybridOptions& opt);

// Decode state: the last w raw keys and values (with their phi_k and gates) in a ring, and the
// linear state of everything that has left the window. All f32.
struct HybridCache {
  Tensor k, v, fk;  // [B, w, H, d | dv | f] ring
  Tensor g;         // [B, w, H] ring of log gates
  Tensor S;         // [B, H, f, dv + 1]: the linear state; its last column is the normaliser z
  std::vector<int64_t> seen;  // tokens seen per sequence
  int64_t window = 0;

  static HybridCache create(int64_t B, int64_t H, int64_t d, int64_t f, int64_t dv, int64_t window);
  // Cache bytes: constant in the context length.
  size_t nbytes() const;
};

// Feeds a prefix (k, fk, v [B, T, H, *], g [B, T, H] or none) into an empty cache, as if each
// token had been decoded: the ring gets the last w tokens, the linear state the rest.
void hybrid_cache_prefill(const TensorView& k, const TensorView& fk, const TensorView& v,
                          const TensorView& g, HybridCache& cache, const HybridOptions& opt);

// One decode step: inputs [B, 1, H, *] (g [B, 1, H] or none); the token joins the cache (the key
// leaving the window is folded into the linear state) and out [B, 1, H, dv] is its output.
void hybrid_attention_step(const TensorView& q, const TensorView& k, const TensorView& fq,
                           const TensorView& fk, const TensorView& v, const TensorView& g,
                           HybridCache& cache, const TensorView& out, const HybridOptions& opt);

}  // namespace subq
