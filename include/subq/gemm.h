// A full fp32 GEMM on subq's own register tile (src/cpu/gemm_tile-inl.h):
//
//   c [M, N] = a [M, K] · b [K, N]      (or c += a · b with accumulate)
//
// Every operand is a strided 2-D view, so transposes are free: a linear layer's forward is
// gemm(x, Wᵀ), its input gradient gemm(dy, W) and its weight gradient gemm(dyᵀ, x), with Wᵀ and
// dyᵀ the same memory under swapped strides. c's rows may be strided; its columns must be
// contiguous (stride 1).
//
// Why it exists: the model's linear layers otherwise run on libtorch's GEMM (MKL in the PyPI
// wheel), which uses AVX-512 only on Intel CPUs. The model chooses between the two by measuring
// them at start-up (docs/performance.md, "GEMM").
#pragma once

#include "subq/tensor.h"

namespace subq {

void gemm(const TensorView& a, const TensorView& b, const TensorView& c, bool accumulate = false);

}  // namespace subq
