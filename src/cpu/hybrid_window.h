// Internal: the softmax-window part of the hybrid attention on the CPU.
#pragma once

#include "src/hybrid_args.h"

namespace subq::cpu {

// num [B, T, H, dv] and den [B, T, H] (f32, contiguous) = the window and meta terms of the
// hybrid's numerator and denominator (gamma included).
void hybrid_window_forward(const detail::HybridArgs& a, float* num, float* den);

// From dnum [B, T, H, dv] and dden [B, T, H] (f32): the window part's gradients, added into the
// f32 buffers dq, dk [B, T, H, d], dv [B, T, H, dv], dmeta_k [H, M, d], dmeta_v [H, M, dv],
// dgamma [H] (each may be null except dq, dk, dv).
void hybrid_window_backward(const detail::HybridArgs& a, const float* dnum, const float* dden,
                            float* dq, float* dk, float* dv, float* dmeta_k, float* dmeta_v,
                            double* dgamma);

}  // namespace subq::cpu
