// Internal: a validated exact-attention problem, shared by the reference (src/ref) and the fast
// kernels (src/cpu). src/flash.cc builds it from the public arguments after checking them all,
// so the implementations never see a bad shape, dtype or index.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "src/row_ptr.h"
#include "subq/tensor.h"

namespace subq::detail {

// One sequence of the (possibly varlen) batch.
struct FlashSeq {
  int64_t batch;    // index along dim 0 of q, k, v, out (always 0 for varlen)
  int64_t q_start;  // first row along dim 1 of q / out, and first column of lse's last dim
  int64_t Tq;
  int64_t k_start;  // first row along dim 1 of k / v
  int64_t Tk;
};

struct FlashArgs {
  TensorView q, k, v, out, lse;  // forward
  TensorView dout, dq, dk, dv;   // backward only
  int64_t H = 0, Hkv = 0, D = 0, Dv = 0;
  float scale = 1.f;
  float softcap = 0.f;            // 0: off
  int64_t left = -1, right = -1;  // resolved window (causal folded into right); -1 unbounded
  std::vector<float> alibi;       // empty, or slope of (sequence n, head h) at n * H + h
  std::vector<FlashSeq> seqs;
  bool varlen = false;  // seqs come from cu_seqlens (rows may be left uncovered)

  int64_t group() const { return H / Hkv; }  // query heads per kv head
  float slope(size_t n, int64_t h) const { return alibi.empty() ? 0.f : alibi[n * H + h]; }
};

// Key j is visible from query i of a sequence with Tq queries and Tk keys. The window is
// aligned bottom-right: query i sits at key position i + Tk - Tq.
inline bool flash_visible(int64_t i, int64_t j, int64_t Tq, int64_t Tk, int64_t left,
                          int64_t right) {
  if (j < 0 || j >= Tk) return false;
  const int64_t pos = i + Tk - Tq;
  if (left >= 0 && j < pos - left) return false;
  if (right >= 0 && j > pos + right) return false;
  return true;
}

// A validated decode-against-cache problem.
struct FlashDecodeArgs {
  TensorView q, k_cache, v_cache, out, lse;
  int64_t B = 0, Tn = 0, C = 0, H = 0, Hkv = 0, D = 0, Dv = 0;
  float scale = 1.f, softcap = 0.f;
  int64_t left = -1, right = -1;
  std::vector<float> alibi;    // empty or [B * H]
  std::vector<int64_t> total;  // tokens in the cache per sequence, new ones included
  bool ring = false;
  int num_splits = 0;

  int64_t group() const { return H / Hkv; }
  float slope(int64_t b, int64_t h) const { return alibi.empty() ? 0.f : alibi[b * H + h]; }
  // Absolute positions [first, total) that are still stored (a ring holds the last C).
  int64_t first_stored(int64_t b) const { return ring && total[b] > C ? total[b] - C : 0; }
  int64_t slot(int64_t pos) const { return ring ? pos % C : pos; }
};

}  // namespace subq::detail

namespace subq {
struct FlashOptions;
namespace detail {
// Validates forward arguments exactly as flash_attention_forward does and returns the problem
// (tests use it to call the reference with options the public API does not expose).
FlashArgs make_flash_forward_args(const TensorView& q, const TensorView& k, const TensorView& v,
                                  const TensorView& out, const TensorView& lse,
                                  const FlashOptions& opt);
}  // namespace detail
}  // namespace subq
