// Internal: the fast CPU kernels of (gated) linear attention.
//
// src/cpu/linear.cc is the glue: it reduces every problem to a "core" one that the SIMD kernels
// solve, and turns the kernels' raw results into the public outputs:
// - normalize becomes an extra value column of ones (z is the state's extra column, and the
//   division happens afterwards), so the kernels never see z;
// - states are f32 [N, H, K, Vc] contiguous scratch (V-first layouts are transposed here);
// - gate gradients come from the identity dL/db_t = q_t o dq_t - k_t o dk_t (and
//   o_t o do_t - v_t o dv_t for gv) plus the final-state term, reverse-cumulated, so the
//   kernels only produce per-value-head dq and dk.
#pragma once

#include <cstdint>

#include "src/linear_args.h"

namespace subq::cpu {

void linear_forward(const detail::LinearArgs& a);   // src/cpu/linear.cc
void linear_backward(const detail::LinearArgs& a);  // src/cpu/linear.cc

// The core problem the SIMD kernels solve, per sequence n and value head h (key head h / G):
//   S_t = diag(exp(gk_t)) S_{t-1} diag(exp(gv_t)) + k_t v_t^T,  o_t = scale q_t^T S_t
// (causal), or o_t = scale q_t^T (S_0 + sum_t k_t v_t^T) (non-causal).
struct LinearCore {
  const detail::LinearArgs* a = nullptr;  // q, k, gates, sequences, shapes (K, H, Hk)
  TensorView v;                           // [B, T, H, Vc]: a->v, or its ones-augmented copy
  TensorView gv;                          // [B, T, H, Vc] f32, or undefined (augmented if needed)
  int64_t Vc = 0;
  float scale = 1.f;
  const float* h0 = nullptr;  // f32 [N, H, K, Vc] or null (zeros)
  float* ht = nullptr;        // f32 [N, H, K, Vc] or null
  TensorView out;             // [B, T, H, Vc]
  // Backward.
  TensorView dout;             // [B, T, H, Vc]
  const float* dht = nullptr;  // f32 [N, H, K, Vc] or null
  float* dh0 = nullptr;        // f32 [N, H, K, Vc] or null
  float* dq = nullptr;         // f32 [B, T, H, K]: dq per value head (summed over groups later)
  float* dk = nullptr;         // f32 [B, T, H, K]
  TensorView dv;               // [B, T, H, Vc]
};

// Row offset of (batch b, row r, value head h) in the [B, T, H, *] f32 buffers above.
inline int64_t core_row(const detail::LinearArgs& a, int64_t b, int64_t r, int64_t h) {
  return (b * a.q.size(1) + r) * a.H + h;
}

// Chunked form for scalar gates (none, g, g_gamma) without gv; `chunk` tokens per chunk.
void linear_chunk_forward(const LinearCore& c, int64_t chunk);   // src/cpu/linear_chunk.cc
void linear_chunk_backward(const LinearCore& c, int64_t chunk);  // src/cpu/linear_chunk.cc

// Chunked form for a per-key-dim gate gk without gv.
void linear_chunk_gk_forward(const LinearCore& c, int64_t chunk);   // linear_chunk_gk.cc
void linear_chunk_gk_backward(const LinearCore& c, int64_t chunk);  // linear_chunk_gk.cc

void linear_recurrent_forward(const LinearCore& c);   // src/cpu/linear_recurrent.cc
void linear_recurrent_backward(const LinearCore& c);  // src/cpu/linear_recurrent.cc

}  // namespace subq::cpu
