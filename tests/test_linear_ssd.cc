// Mamba-2's SSD computed directly from its segment-sum definition, with the D skip and the z gate
// applied outside, and simple_gla reproducing it with q = C, k = B, v = x dt, g = A dt, scale 1,
// and Mamba's V-first state layout.
#include <gtest/gtest.h>

#include <cmath>

#include "subq/linear.h"
#include "tests/linear_util.h"

namespace subq {
namespace {

TEST(LinearSsd, SimpleGlaReproducesSsd) {
  const int64_t B = 2, T = 150, H = 3, N = 16 /* state */, P = 24 /* head dim */;
  Rng rng(5);
  // Inputs as Mamba-2 has them: x [B,T,H,P], dt > 0 [B,T,H], A < 0 [H], B, C [B,T,H,N],
  // D [H], z [B,T,H,P].
  Tensor x = test::randn({B, T, H, P}, DType::kF64, 1),
         Bm = test::randn({B, T, H, N}, DType::kF64, 2);
  Tensor Cm = test::randn({B, T, H, N}, DType::kF64, 3),
         z = test::randn({B, T, H, P}, DType::kF64, 4);
  std::vector<double> dt(B * T * H), A(H), D(H);
  for (auto& d : dt) d = std::log1p(std::exp(rng.normal() - 1.0));  // softplus
  for (int64_t h = 0; h < H; ++h) {
    A[h] = -std::exp(rng.normal());
    D[h] = rng.normal();
  }
  auto DT = [&](int64_t b, int64_t t, int64_t h) { return dt[(b * T + t) * H + h]; };

  // SSD by definition: y_t = sum_{s<=t} (C_t . B_s) exp(segsum_{s+1..t}(A dt)) dt_s x_s + D x_t,
  // then y *= silu(z). The final state h[p][n] = sum_s exp(segsum_{s+1..T}) dt_s x_s[p] B_s[n].
  Tensor y_ref = Tensor::zeros({B, T, H, P}, DType::kF64);
  Tensor h_ref = Tensor::zeros({B, H, P, N}, DType::kF64);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> cum(T + 1, 0.0);  // cum[t + 1] = sum_{r <= t} A dt_r
      for (int64_t t = 0; t < T; ++t) cum[t + 1] = cum[t] + A[h] * DT(b, t, h);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t p = 0; p < P; ++p) {
          double y = D[h] * get_element(x, {b, t, h, p});
          for (int64_t s = 0; s <= t; ++s) {
            double cb = 0;
            for (int64_t n = 0; n < N; ++n)
              cb += get_element(Cm, {b, t, h, n}) * get_element(Bm, {b, s, h, n});
            y +=
                cb * std::exp(cum[t + 1] - cum[s + 1]) * DT(b, s, h) * get_element(x, {b, s, h, p});
          }
          const double zz = get_element(z, {b, t, h, p});
          set_element(y_ref, {b, t, h, p}, y * zz / (1 + std::exp(-zz)));
        }
      for (int64_t p = 0; p < P; ++p)
        for (int64_t n = 0; n < N; ++n) {
          double acc = 0;
          for (int64_t s = 0; s < T; ++s)
            acc += std::exp(cum[T] - cum[s + 1]) * DT(b, s, h) * get_element(x, {b, s, h, p}) *
                   get_element(Bm, {b, s, h, n});
          set_element(h_ref, {b, h, p, n}, acc);
        }
    }

  // simple_gla: q = C, k = B, v = x dt, g = A dt, scale = 1, state V-first ([H, P, N]).
  Tensor q = Tensor::copy_of(Cm, DType::kF32), k = Tensor::copy_of(Bm, DType::kF32);
  Tensor v = Tensor::empty({B, T, H, P}, DType::kF32), g = Tensor::empty({B, T, H}, DType::kF32);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h) {
        set_element(g, {b, t, h}, A[h] * DT(b, t, h));
        for (int64_t p = 0; p < P; ++p)
          set_element(v, {b, t, h, p}, get_element(x, {b, t, h, p}) * DT(b, t, h));
      }
  for (LinearMode mode : {LinearMode::kChunk, LinearMode::kRecurrent, LinearMode::kParallel}) {
    LinearAttentionOptions opt;
    opt.g = g;
    opt.scale = 1.f;
    opt.state_v_first = true;
    opt.mode = mode;
    Tensor o = Tensor::empty({B, T, H, P}, DType::kF32),
           ht = Tensor::empty({B, H, P, N}, DType::kF32);
    linear_attention_forward(q, k, v, o, ht, {}, opt);
    // D skip and z gate outside the kernel.
    Tensor y = Tensor::empty({B, T, H, P}, DType::kF64);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t p = 0; p < P; ++p) {
            const double zz = get_element(z, {b, t, h, p});
            const double yy = get_element(o, {b, t, h, p}) + D[h] * get_element(x, {b, t, h, p});
            set_element(y, {b, t, h, p}, yy * zz / (1 + std::exp(-zz)));
          }
    EXPECT_LE(test::rel_rms(y, y_ref), 1e-5) << static_cast<int>(mode);
    EXPECT_LE(test::rel_rms(ht, h_ref), 1e-5) << static_cast<int>(mode);
  }
}

}  // namespace
}  // namespace subq
