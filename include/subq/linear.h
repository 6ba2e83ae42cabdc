// Linear and gated linear attention (see docs/linear_attention.md).
//
// One op covers linear_attention, simple_gla (Mamba-2/SSD, RetNet) and gla, as
// flash-linear-attention defines them. Per value head, with a K x V state S:
//
//   S_t = diag(exp(gk_t)) S_{t-1} diag(exp(gv_t)) + k_t v_t^T     (gk = g_t for a scalar gate)
//   o_t = scale * q_t^T S_t                       or, normalized,  (q_t^T S_t) / (q_t^T z_t + eps)
//   z_t = diag(exp(gk_t)) z_{t-1} + k_t            (normalize only)
//
// Gates are natural-log decays, <= 0 (-inf forgets everything). Three forms compute the same
// thing: chunk (chunkwise-parallel, for prefill and training), recurrent (token by token) and
// parallel (the quadratic form, for short sequences and tests).
#pragma once

#include <cstdint>
#include <optional>

#include "subq/backend.h"
#include "subq/tensor.h"

namespace subq {

enum class LinearMode { kChunk, kRecurrent, kParallel };

struct LinearAttentionOptions {
  // Multiplies q . k; default 1/sqrt(K). Not used with normalize (it cancels).
  std::optional<float> scale;
  // Divide by q^T z + eps, z the running sum of (decayed) keys, part of the state.
  bool normalize = false;
  float eps = 1e-6f;
  // Gates, natural-log decays <= 0; at most one of g, g_gamma, gk (gv may join any).
  TensorView g;        // [B, T, H] scalar per head and token (simple_gla, Mamba-2)
  TensorView g_gamma;  // [H] constant per head (RetNet: retnet_g_gamma(H))
  TensorView gk;       // [B, T, H, K] per key dim (gla)
  TensorView gv;       // [B, T, H, V] per value dim: scales the state's columns
  // States, f32, one per sequence: [N, H, K, V], or [N, H, V, K] with state_v_first (Mamba).
  TensorView initial_state;
  TensorView initial_z;  // [N, H, K], normalize only
  bool state_v_first = false;
  // Varlen: int32/int64 [N + 1] offsets into packed [1, sum T, ...] inputs.
  TensorView cu_seqlens;
  // false: non-causal, one global state per sequence, o_t = q_t^T S_T (vision: L2ViT, RALA,
  // MALA). Gates and initial states are not allowed then.
  bool causal = true;
  LinearMode mode = LinearMode::kChunk;
  int64_t chunk_size = 64;  // chunk mode; a power of two, 16 to 256
  Impl impl = Impl::kAuto;
};

// Forward.
//   q, k  [B, T, Hk, K]   f32 | bf16 | f16
//   v     [B, T, H, V]    same dtype; H % Hk == 0: value head h reads key head h / (H / Hk)
//   out   [B, T, H, V]    written, any of f32 | bf16 | f16
//   final_state f32 [N, H, K, V] (or V-first) and final_z f32 [N, H, K]: written if given
void linear_attention_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                              const TensorView& out, const TensorView& final_state,
                              const TensorView& final_z, const LinearAttentionOptions& opt);

// Gradients. dq, dk, dv are required; every other output is written only if given, and must
// match the option it differentiates (dg for g, dg_gamma for g_gamma, ...).
struct LinearAttentionGrads {
  TensorView dq, dk, dv;
  TensorView dg, dg_gamma, dgk, dgv;  // f32, shaped like the gates
  TensorView dh0, dz0;                // f32, shaped like initial_state / initial_z
};

// Backward. dout [B, T, H, V]; dht (like final_state) and dzt (like final_z) are the gradients
// arriving at the final state, optional (zero when absent).
void linear_attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                               const TensorView& dout, const TensorView& dht, const TensorView& dzt,
                               const LinearAttentionGrads& grads,
                               const LinearAttentionOptions& opt);

// One decode step for B sequences: q, k [B, 1, Hk, K], v [B, 1, H, V]; state f32 [B, H, K, V]
// (or V-first) and z [B, H, K] (normalize) are updated in place; out [B, 1, H, V].
// Gate options take their T = 1 shapes ([B, 1, H], [B, 1, H, K], ...).
void linear_attention_step(const TensorView& q, const TensorView& k, const TensorView& v,
                           const TensorView& state, const TensorView& z, const TensorView& out,
                           const LinearAttentionOptions& opt);

// RetNet's constant gates: g_gamma[h] = log(1 - 2^(-5 - h)), f32 [H].
Tensor retnet_g_gamma(int64_t H);

// FLOPs of the chunk form, as `subq bench` counts them (docs/linear_attention.md).
double linear_attention_chunk_flops(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                                    int64_t chunk);

}  // namespace subq
