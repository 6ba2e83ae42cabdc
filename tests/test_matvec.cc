// matvec (subq/matvec.h) against a float64 reference: f32 and bf16 weights, every n the tile
// code specialises (1 to 8), column counts that leave a tail after the vectors, rows that leave
// a tail after the tiles, 1 and 2 threads; and bad arguments.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "subq/error.h"
#include "subq/matvec.h"
#include "subq/random.h"
#include "subq/threads.h"
#include "tests/test_util.h"

namespace subq {
namespace {

TEST(Matvec, MatchesFloat64Reference) {
  for (DType wt : {DType::kF32, DType::kBF16}) {
    for (int64_t cols : {1, 15, 64, 100, 576}) {
      for (int64_t rows : {1, 3, 7, 130}) {
        for (int64_t n = 1; n <= kMatvecMaxRows; ++n) {
          Tensor w = Tensor::empty({rows, cols}, wt), x = Tensor::empty({n, cols}, DType::kF32);
          fill_normal(w, 11 + rows + cols);
          fill_normal(x, 7 + n);
          for (int threads : {1, 2}) {
            set_num_threads(threads);
            Tensor y = Tensor::empty({n, rows}, DType::kF32);
            matvec(w.view(), x.view(), y.view());
            for (int64_t t = 0; t < n; ++t)
              for (int64_t r = 0; r < rows; ++r) {
                double want = 0, scale = 0;
                for (int64_t c = 0; c < cols; ++c) {
                  const double p = load_element(w.data(), wt, r * cols + c) *
                                   load_element(x.data(), DType::kF32, t * cols + c);
                  want += p;
                  scale += std::abs(p);
                }
                EXPECT_NEAR(y.data_as<float>()[t * rows + r], want, 1e-5 * scale + 1e-6)
                    << dtype_name(wt) << " rows " << rows << " cols " << cols << " n " << n;
              }
          }
        }
      }
    }
  }
}

TEST(Matvec, BadArgumentsAreErrors) {
  Tensor w = Tensor::empty({4, 8}, DType::kF32), x = Tensor::empty({1, 8}, DType::kF32);
  Tensor y = Tensor::empty({1, 4}, DType::kF32);
  Tensor x9 = Tensor::empty({9, 8}, DType::kF32), y9 = Tensor::empty({9, 4}, DType::kF32);
  Tensor xc = Tensor::empty({1, 7}, DType::kF32), yr = Tensor::empty({1, 5}, DType::kF32);
  Tensor wi = Tensor::empty({4, 8}, DType::kI32);
  EXPECT_THROW(matvec(w.view(), x9.view(), y9.view()), Error);
  EXPECT_THROW(matvec(w.view(), xc.view(), y.view()), Error);
  EXPECT_THROW(matvec(w.view(), x.view(), yr.view()), Error);
  EXPECT_THROW(matvec(wi.view(), x.view(), y.view()), Error);
  EXPECT_NO_THROW(matvec(w.view(), x.view(), y.view()));
}

}  // namespace
}  // namespace subq
