// gemm (subq/gemm.h) against a float64 reference: the three forms a linear layer needs (a · bᵀ,
// a · b, aᵀ · b, all through strides), sizes that leave edges in every block (M, N and K not
// multiples of the tile or of the blocks, and larger than one block), accumulate, 1 and 2
// threads; and bad arguments.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "subq/error.h"
#include "subq/gemm.h"
#include "subq/random.h"
#include "subq/threads.h"
#include "tests/test_util.h"

namespace subq {
namespace {

using test::randn;
using test::values;

// Which operands are stored transposed: a as [K, M] and/or b as [N, K].
struct Form {
  bool a_t, b_t;
  const char* name;
};

TEST(Gemm, MatchesFloat64Reference) {
  const Form forms[] = {{false, true, "a b^T (forward)"},
                        {false, false, "a b (input grad)"},
                        {true, false, "a^T b (weight grad)"},
                        {true, true, "a^T b^T"}};
  struct Shape {
    int64_t M, N, K;
  };
  // 1 x 1 x 1; edges inside one tile; more than one KC (256) and MC (192) block; N beyond one NC
  // (2048) block; a short M with wide N (the panels are split among the threads).
  const Shape shapes[] = {{1, 1, 1},      {7, 13, 5},    {33, 40, 300},
                          {200, 70, 600}, {5, 2100, 17}, {3, 300, 64}};
  const int saved_threads = num_threads();
  for (const Form& f : forms) {
    for (const Shape& s : shapes) {
      Tensor a = randn(f.a_t ? std::vector<int64_t>{s.K, s.M} : std::vector<int64_t>{s.M, s.K},
                       DType::kF32, 1 + s.M);
      Tensor b = randn(f.b_t ? std::vector<int64_t>{s.N, s.K} : std::vector<int64_t>{s.K, s.N},
                       DType::kF32, 2 + s.N);
      const TensorView av =
          f.a_t ? TensorView(a.data(), DType::kF32, {s.M, s.K}, {1, s.M}) : a.view();
      const TensorView bv =
          f.b_t ? TensorView(b.data(), DType::kF32, {s.K, s.N}, {1, s.K}) : b.view();
      const float* ap = a.data_as<float>();
      const float* bp = b.data_as<float>();
      for (bool accumulate : {false, true}) {
        for (int threads : {1, 2}) {
          set_num_threads(threads);
          Tensor c = randn({s.M, s.N}, DType::kF32, 3);
          const std::vector<double> c0 = values(c.view());
          gemm(av, bv, c.view(), accumulate);
          for (int64_t m = 0; m < s.M; ++m)
            for (int64_t n = 0; n < s.N; ++n) {
              double want = accumulate ? c0[m * s.N + n] : 0.0, scale = std::abs(want);
              for (int64_t k = 0; k < s.K; ++k) {
                const double x = f.a_t ? ap[k * s.M + m] : ap[m * s.K + k];
                const double y = f.b_t ? bp[n * s.K + k] : bp[k * s.N + n];
                want += x * y;
                scale += std::abs(x * y);
              }
              ASSERT_NEAR(c.data_as<float>()[m * s.N + n], want, 1e-5 * scale + 1e-6)
                  << f.name << " M " << s.M << " N " << s.N << " K " << s.K << " accumulate "
                  << accumulate << " threads " << threads << " at " << m << "," << n;
            }
        }
      }
    }
  }
  set_num_threads(saved_threads);
}

TEST(Gemm, StridedRowsOfCAndZeroDepth) {
  // c as every other row of a larger buffer; untouched rows keep their values.
  Tensor a = randn({4, 9}, DType::kF32, 5), b = randn({9, 20}, DType::kF32, 6);
  Tensor buf = Tensor::zeros({8, 20}, DType::kF32);
  gemm(a.view(), b.view(), TensorView(buf.data(), DType::kF32, {4, 20}, {40, 1}));
  for (int64_t m = 0; m < 4; ++m)
    for (int64_t n = 0; n < 20; ++n) {
      double want = 0;
      for (int64_t k = 0; k < 9; ++k)
        want += double(a.data_as<float>()[m * 9 + k]) * b.data_as<float>()[k * 20 + n];
      EXPECT_NEAR(buf.data_as<float>()[2 * m * 20 + n], want, 1e-4);
      EXPECT_EQ(buf.data_as<float>()[(2 * m + 1) * 20 + n], 0.f);
    }
  // K = 0: c = 0, or unchanged with accumulate.
  Tensor a0 = Tensor::empty({3, 0}, DType::kF32), b0 = Tensor::empty({0, 4}, DType::kF32);
  Tensor c = randn({3, 4}, DType::kF32, 7);
  const std::vector<double> before = values(c.view());
  gemm(a0.view(), b0.view(), c.view(), /*accumulate=*/true);
  EXPECT_EQ(values(c.view()), before);
  gemm(a0.view(), b0.view(), c.view());
  for (double v : values(c.view())) EXPECT_EQ(v, 0.0);
}

TEST(Gemm, BadArgumentsAreErrors) {
  Tensor a = Tensor::empty({4, 8}, DType::kF32), b = Tensor::empty({8, 5}, DType::kF32);
  Tensor c = Tensor::empty({4, 5}, DType::kF32);
  Tensor b7 = Tensor::empty({7, 5}, DType::kF32), c6 = Tensor::empty({4, 6}, DType::kF32);
  Tensor bh = Tensor::empty({8, 5}, DType::kBF16), a3 = Tensor::empty({4, 8, 1}, DType::kF32);
  EXPECT_THROW(gemm(a.view(), b7.view(), c.view()), Error);
  EXPECT_THROW(gemm(a.view(), b.view(), c6.view()), Error);
  EXPECT_THROW(gemm(a.view(), bh.view(), c.view()), Error);
  EXPECT_THROW(gemm(a3.view(), b.view(), c.view()), Error);
  // c with strided columns
  Tensor cbig = Tensor::empty({4, 10}, DType::kF32);
  EXPECT_THROW(gemm(a.view(), b.view(), TensorView(cbig.data(), DType::kF32, {4, 5}, {10, 2})),
               Error);
  EXPECT_NO_THROW(gemm(a.view(), b.view(), c.view()));
}

}  // namespace
}  // namespace subq
