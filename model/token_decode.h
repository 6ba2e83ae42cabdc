// One decode step of one sequence, torch-free: the token's whole pass through the decoder on
// raw float rows and subq's kernels (matvec, flash_attention_decode), into scratch that the cache
// owns. A decode step of a 135M-parameter model is 150 matvecs and a few hundred tiny ops; run
// through libtorch, each tiny op costs a few microseconds of dispatch and an allocation: this
// path saved about 0.7 ms of an 8.3-8.6 ms bf16 step of the default teacher (docs/performance.md,
// "The whole model on AMD Zen 5"). It computes what the general code computes (tests/model:
// Decode.TokenPathMatchesTheGeneralCode).
//
// It is taken by DecoderModelImpl::forward for ids [1, 1] with a cache and autograd off, when
// every layer supports it (softmax attention without LoRA, as a teacher is; the MLP without
// LoRA). SUBQ_TOKEN_DECODE=0 turns it off (the general code then runs: a reference path).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "model/modules.h"
#include "subq/tensor.h"

namespace subq::model {

// Rows a step works in, reused from step to step (sized on first use, then never again).
struct TokenScratch {
  std::vector<float> h;     // [hidden]: the residual stream
  std::vector<float> x;     // [hidden]: a norm's output, a block's input
  std::vector<float> y;     // [hidden]: a block's output
  std::vector<float> qkv;   // [(H + 2 Hkv) hd]: q, k and v
  std::vector<float> q, k;  // [H hd], [Hkv hd]: q and k after RoPE
  std::vector<float> attn;  // [H hd]: the attention output
  std::vector<float> lse;   // [H]
  std::vector<float> gu;    // [2 intermediate]: gate and up
  std::vector<float> act;   // [intermediate]: silu(gate) * up
  // RoPE: the config's inverse frequencies [hd / 2] and attention factor, computed once; the
  // cos and sin rows [hd] of the current position, as make_rope_table computes them.
  std::vector<float> inv_freq;
  double rope_factor = 1;
  std::vector<float> cos, sin;
};

// Whether the token path is on (SUBQ_TOKEN_DECODE, read once: anything but "0" is on).
bool token_decode_enabled();

// A view of the `rows` rows [rows, in] that start at weight w's data (f32 or bf16): w's own
// rows, or those of several projections that lie back to back (adjacent_row_count).
TensorView weight_view(const at::Tensor& w, int64_t rows);

// y [rows] = W x for one row x [in] and that matrix, through subq's matvec.
void matvec_row(const at::Tensor& w, int64_t rows, const float* x, float* y);

// y [out] = W x (+ bias) for one projection. LoRA is not applied: the token path is not taken
// with it.
void project_row(const ProjectionImpl& p, const float* x, float* y);

}  // namespace subq::model
