// Dispatching entry to the fp32 GEMM tile (src/cpu/gemm_tile-inl.h) for tests and benches.
// Kernels include the -inl.h directly so the tile inlines into their loops.
#pragma once

#include <cstddef>

namespace subq::cpu {

enum class GemmInit { kOverwrite, kAccumulate, kRowScaled };

// C[M x N] (init) A[M x K] * B[K x N]; A is addressed a[m * a_rs + k * a_cs], B and C by rows.
// N must be a multiple of simd_lanes_f32().
void gemm_tile_f32(size_t M, size_t N, size_t K, const float* a, size_t a_rs, size_t a_cs,
                   const float* b, size_t ldb, float* c, size_t ldc, GemmInit init,
                   const float* row_scale = nullptr);

// Lanes of an f32 vector on the dispatched target (8 on AVX2, 16 on AVX-512).
size_t simd_lanes_f32();

}  // namespace subq::cpu
