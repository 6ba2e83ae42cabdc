// Exact softmax attention with FlashAttention-2 semantics (see docs/exact_attention.md).
//
// Tiled online softmax: the Tq x Tk score matrix never exists, memory is O(T), and tiles the
// mask cannot reach are skipped. Forward, backward from the saved LSE, and decode against a KV
// cache. Every function validates all arguments before it reads memory and throws subq::Error
// on a bad one.
#pragma once

#include <cstdint>
#include <optional>

#include "subq/backend.h"
#include "subq/tensor.h"

namespace subq {

struct FlashOptions {
  // Multiplies q.k; default 1/sqrt(D).
  std::optional<float> softmax_scale;
  // Causal, aligned bottom-right: query i sees key j iff j <= i + Tk - Tq. Same as right = 0.
  bool causal = false;
  // (left, right): query i sees keys in [i + Tk - Tq - left, i + Tk - Tq + right]; -1 is
  // unbounded. A sliding window of w keys including self is (w - 1, 0).
  int64_t window_left = -1;
  int64_t window_right = -1;
  // c > 0: s = c * tanh(s / c) after scaling and before bias and mask. 0 disables.
  float softcap = 0.f;
  // f32 [H] or [B, H]: adds -slope * |i + Tk - Tq - j| to the score.
  TensorView alibi_slopes;
  // Varlen: int32 or int64 [N + 1] offsets into packed q [1, sum Tq, H, D] and k, v
  // [1, sum Tk, Hkv, D]. Both or neither. The alignment rules apply per sequence.
  TensorView cu_seqlens_q;
  TensorView cu_seqlens_k;
  // Fast kernels or the float64 reference (see subq/backend.h).
  Impl impl = Impl::kAuto;
};

// Forward.
//   q   [B, Tq, H, D]     f32 | bf16 | f16
//   k   [B, Tk, Hkv, D]   same dtype as q; H % Hkv == 0, query head h reads kv head h / (H/Hkv)
//   v   [B, Tk, Hkv, Dv]  same dtype as q
//   out [B, Tq, H, Dv]    any float dtype (written)
//   lse [B, H, Tq]        f32 (written): log sum_j exp(s_ij) over the visible j
// A query that sees no key gets out = 0 and lse = -inf.
void flash_attention_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                             const TensorView& out, const TensorView& lse,
                             const FlashOptions& opt = {});

// Backward from the forward's out and lse; nothing Tq x Tk is stored.
//   dout [B, Tq, H, Dv]; dq, dk, dv are written, shaped like q, k, v (any float dtype).
// With GQA, dk and dv are summed over the query heads that share a kv head.
void flash_attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                              const TensorView& out, const TensorView& lse, const TensorView& dout,
                              const TensorView& dq, const TensorView& dk, const TensorView& dv,
                              const FlashOptions& opt = {});

struct FlashDecodeOptions : FlashOptions {
  // The cache is a ring buffer of the last C tokens: absolute position p lives in slot p % C.
  // Requires window_left >= 0 and window_left + Tn <= C, so that no visible key was overwritten.
  bool ring_buffer = false;
  // Number of KV ranges per (sequence, kv head) that threads take in parallel; their partial
  // (max, sum, output) are merged exactly. 0 picks one from the cache length and thread count.
  int num_splits = 0;
};

// Decode against a KV cache (FlashAttention's flash_attn_with_kvcache).
//   q        [B, Tn, H, D]      the queries of the Tn newest tokens (Tn = 1 for one step)
//   k_cache  [B, C, Hkv, D]     capacity C; written in place when k_new is given
//   v_cache  [B, C, Hkv, Dv]
//   cache_seqlens int32 | int64 [B]: tokens already in the cache, before k_new. It is not
//            modified: the caller advances it by Tn after the call.
//   k_new    [B, Tn, Hkv, D], v_new [B, Tn, Hkv, Dv]: optional; appended at cache_seqlens[b].
//   out      [B, Tn, H, Dv], lse f32 [B, H, Tn] (written)
// The Tn queries are the last Tn of the cached tokens; causal is bottom-right as in the forward.
// Varlen options (cu_seqlens) are not accepted here.
void flash_attention_decode(const TensorView& q, const TensorView& k_cache,
                            const TensorView& v_cache, const TensorView& cache_seqlens,
                            const TensorView& k_new, const TensorView& v_new, const TensorView& out,
                            const TensorView& lse, const FlashDecodeOptions& opt = {});

// Allocating conveniences: out in q's dtype, lse in f32.
struct FlashOutput {
  Tensor out;
  Tensor lse;
};
FlashOutput flash_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                            const FlashOptions& opt = {});

struct FlashGrads {
  Tensor dq, dk, dv;
};
FlashGrads flash_attention_grad(const TensorView& q, const TensorView& k, const TensorView& v,
                                const TensorView& out, const TensorView& lse,
                                const TensorView& dout, const FlashOptions& opt = {});

// FLOP counts as FlashAttention reports them (used by `subq bench`): 2 * B * H * Tq * Tk *
// (D + Dv) forward (4 * B * H * Tq * Tk * D when Dv = D), halved when causal; the backward is
// 2.5x the forward.
double flash_forward_flops(int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D, int64_t Dv,
                           bool causal);

}  // namespace subq
