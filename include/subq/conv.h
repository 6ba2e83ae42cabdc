// Causal depthwise short convolution (LAWCAT, Mamba, BASED's BaseConv), see
// docs/short_conv.md. Channels-last over x [B, T, D], width W <= 8:
//
//   u_t[d] = bias[d] + sum_{j < W} weight[d, j] * x_{t - W + 1 + j}[d]
//   y_t    = u_t, or silu(u_t)
//
// x before t = 0 comes from the initial state (zeros by default). The final state is the last
// W - 1 inputs, so a stream can continue where it stopped (prefill -> update -> update ...).
#pragma once

#include "subq/backend.h"
#include "subq/tensor.h"

namespace subq {

inline constexpr int64_t kMaxConvWidth = 8;

struct ShortConvOptions {
  bool silu = false;
  TensorView bias;           // [D], optional
  TensorView initial_state;  // f32 [N, W - 1, D]: the W - 1 inputs before t = 0, oldest first
  TensorView cu_seqlens;     // int32/int64 [N + 1]: varlen over packed x [1, sum T, D]
  Impl impl = Impl::kAuto;
};

// x [B, T, D] f32 | bf16 | f16; weight [D, W] (float); out [B, T, D] (written);
// final_state f32 [N, W - 1, D] (written if given; N = B, or the number of varlen sequences).
void short_conv_forward(const TensorView& x, const TensorView& weight, const TensorView& out,
                        const TensorView& final_state, const ShortConvOptions& opt = {});

struct ShortConvGrads {
  TensorView dx;       // like x (required)
  TensorView dweight;  // like weight (optional)
  TensorView dbias;    // like bias (optional; needs bias)
  TensorView dh0;      // like initial_state (optional)
};

// dout like out; dht (like final_state) is the gradient arriving at the final state, optional.
void short_conv_backward(const TensorView& x, const TensorView& weight, const TensorView& dout,
                         const TensorView& dht, const ShortConvGrads& grads,
                         const ShortConvOptions& opt = {});

// One decode step: x [B, D] is the new input; state f32 [B, W - 1, D] is read and updated in
// place (shifted by one, x appended); out [B, D] is written.
void short_conv_update(const TensorView& x, const TensorView& weight, const TensorView& state,
                       const TensorView& out, const ShortConvOptions& opt = {});

}  // namespace subq
