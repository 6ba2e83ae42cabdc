// y = x · Wᵀ for a few rows of x: the projections of a decode step, which read every weight once
// and so run at the memory's speed. W may be bf16 (read as bf16, computed in f32: half the bytes
// of f32 weights, hence nearly twice the speed) or f32.
//
//   w [rows, cols] f32 or bf16, contiguous;  x [n, cols] f32;  y [n, rows] f32;  n <= 8.
//
// Each row of W is read once for all n rows of x; rows are spread over the threads.
#pragma once

#include "subq/tensor.h"

namespace subq {

inline constexpr int64_t kMatvecMaxRows = 8;

void matvec(const TensorView& w, const TensorView& x, const TensorView& y);

}  // namespace subq
