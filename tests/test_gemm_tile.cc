// The register-blocked GEMM tile against a float64 triple loop, for every row count up to and
// past the register tile, column tails, strided A, and the three init modes.
#include <gtest/gtest.h>

#include <vector>

#include "src/cpu/gemm_tile.h"
#include "tests/test_util.h"

namespace subq::cpu {
namespace {

TEST(GemmTile, MatchesFloat64Loop) {
  const size_t L = simd_lanes_f32();
  for (size_t M : {1, 2, 5, 6, 7, 8, 9, 13, 48, 64, 65}) {
    for (size_t N : {L, 2 * L, 3 * L, 8 * L}) {
      for (size_t K : {1, 3, 64, 129}) {
        for (int transposed_a = 0; transposed_a < 2; ++transposed_a) {
          for (GemmInit init :
               {GemmInit::kOverwrite, GemmInit::kAccumulate, GemmInit::kRowScaled}) {
            // A is M x K, stored row-major or column-major (a_rs = 1, a_cs = M).
            std::vector<float> a(M * K), b(K * N), c(M * N), scale(M);
            Tensor ta = test::randn({static_cast<int64_t>(M * K)}, DType::kF32, M * 7 + K);
            Tensor tb = test::randn({static_cast<int64_t>(K * N)}, DType::kF32, N * 3 + K);
            Tensor tc = test::randn({static_cast<int64_t>(M * N)}, DType::kF32, M + N);
            std::copy_n(ta.data_as<float>(), M * K, a.data());
            std::copy_n(tb.data_as<float>(), K * N, b.data());
            std::copy_n(tc.data_as<float>(), M * N, c.data());
            for (size_t i = 0; i < M; ++i) scale[i] = 0.5f + 0.01f * static_cast<float>(i);
            const size_t a_rs = transposed_a ? 1 : K, a_cs = transposed_a ? M : 1;
            std::vector<double> want(M * N);
            for (size_t i = 0; i < M; ++i)
              for (size_t j = 0; j < N; ++j) {
                double acc = 0;
                for (size_t k = 0; k < K; ++k)
                  acc += static_cast<double>(a[i * a_rs + k * a_cs]) * b[k * N + j];
                if (init == GemmInit::kAccumulate) acc += c[i * N + j];
                if (init == GemmInit::kRowScaled)
                  acc += static_cast<double>(scale[i]) * c[i * N + j];
                want[i * N + j] = acc;
              }
            gemm_tile_f32(M, N, K, a.data(), a_rs, a_cs, b.data(), N, c.data(), N, init,
                          scale.data());
            std::vector<double> got(c.begin(), c.end());
            EXPECT_LE(test::rel_rms(got, want), 1e-6)
                << "M " << M << " N " << N << " K " << K << " transposed " << transposed_a
                << " init " << static_cast<int>(init);
          }
        }
      }
    }
  }
}

TEST(GemmTile, LeadingDimensionsLeaveOtherMemoryAlone) {
  const size_t L = simd_lanes_f32(), M = 7, N = 2 * L, K = 5, ldb = N + L, ldc = N + 3;
  std::vector<float> a(M * K, 1.f), b(K * ldb, 2.f), c(M * ldc, -1.f);
  gemm_tile_f32(M, N, K, a.data(), K, 1, b.data(), ldb, c.data(), ldc, GemmInit::kOverwrite);
  for (size_t i = 0; i < M; ++i) {
    for (size_t j = 0; j < N; ++j) EXPECT_EQ(c[i * ldc + j], 10.f);
    for (size_t j = N; j < ldc && i * ldc + j < c.size(); ++j) EXPECT_EQ(c[i * ldc + j], -1.f);
  }
}

}  // namespace
}  // namespace subq::cpu
