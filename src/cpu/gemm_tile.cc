#include "src/cpu/gemm_tile.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/cpu/gemm_tile.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/highway.h"
#include "src/cpu/gemm_tile-inl.h"

HWY_BEFORE_NAMESPACE();
namespace subq::cpu::HWY_NAMESPACE {

void GemmTileF32(size_t M, size_t N, size_t K, const float* a, size_t a_rs, size_t a_cs,
                 const float* b, size_t ldb, float* c, size_t ldc, GemmInit init,
                 const float* row_scale) {
  GemmTile(M, N, K, a, a_rs, a_cs, b, ldb, c, ldc, static_cast<TileInit>(init), row_scale);
}

size_t LanesF32() {
  return hn::Lanes(hn::ScalableTag<float>());
}

}  // namespace subq::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace subq::cpu {

HWY_EXPORT(GemmTileF32);
HWY_EXPORT(LanesF32);

void gemm_tile_f32(size_t M, size_t N, size_t K, const float* a, size_t a_rs, size_t a_cs,
                   const float* b, size_t ldb, float* c, size_t ldc, GemmInit init,
                   const float* row_scale) {
  HWY_DYNAMIC_DISPATCH(GemmTileF32)(M, N, K, a, a_rs, a_cs, b, ldb, c, ldc, init, row_scale);
}

size_t simd_lanes_f32() {
  return HWY_DYNAMIC_DISPATCH(LanesF32)();
}

}  // namespace subq::cpu
#endif
