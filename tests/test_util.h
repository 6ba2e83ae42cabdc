// Helpers shared by the tests: random tensors, error measures, and the flash test cases.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "subq/random.h"
#include "subq/tensor.h"

namespace subq::test {

inline Tensor randn(const std::vector<int64_t>& shape, DType dt, uint64_t seed,
                    double stddev = 1.0) {
  Tensor t = Tensor::empty(shape, dt);
  fill_normal(t, seed, 0.0, stddev);
  return t;
}

// Every element of a float view, in logical (row-major) order, as double.
inline std::vector<double> values(const TensorView& t) {
  Tensor c = Tensor::copy_of(t, DType::kF64);
  const double* p = c.data_as<double>();
  return std::vector<double>(p, p + c.numel());
}

// RMS(a - b) / RMS(b): the error measure of testing_and_performance.md. Entries where b is
// -inf (lse of a fully masked row) must be -inf in a too and are skipped.
inline double rel_rms(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (std::isinf(b[i])) {
      EXPECT_EQ(a[i], b[i]) << "at " << i;
      continue;
    }
    EXPECT_TRUE(std::isfinite(a[i])) << "non-finite value " << a[i] << " at " << i;
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  if (den == 0) return std::sqrt(num);
  return std::sqrt(num / den);
}
inline double rel_rms(const TensorView& a, const TensorView& b) {
  return rel_rms(values(a), values(b));
}

inline double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (!(std::isinf(a[i]) && a[i] == b[i])) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// Quick mode (SUBQ_TEST_QUICK=1, used by the sanitizer run in CI) trims the shape grids.
inline bool quick() {
  const char* e = std::getenv("SUBQ_TEST_QUICK");
  return e && *e && std::string(e) != "0";
}

// A random exact-attention problem: q [B,Tq,H,D], k [B,Tk,Hkv,D], v [B,Tk,Hkv,Dv] and an
// upstream gradient dout [B,Tq,H,Dv], all standard normal from consecutive seeds.
struct FlashCase {
  int64_t B = 1, Tq = 64, Tk = 64, H = 2, Hkv = 1, D = 64, Dv = 64;
  DType dt = DType::kF32;
  uint64_t seed = 1;
};

struct FlashInputs {
  Tensor q, k, v, dout;
  explicit FlashInputs(const FlashCase& c)
      : q(randn({c.B, c.Tq, c.H, c.D}, c.dt, c.seed)),
        k(randn({c.B, c.Tk, c.Hkv, c.D}, c.dt, c.seed + 1)),
        v(randn({c.B, c.Tk, c.Hkv, c.Dv}, c.dt, c.seed + 2)),
        dout(randn({c.B, c.Tq, c.H, c.Dv}, c.dt, c.seed + 3)) {}
};

}  // namespace subq::test
