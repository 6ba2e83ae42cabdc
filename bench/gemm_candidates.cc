// Measures the GEMM-tile candidates on attention tile shapes, single-threaded, L1/L2-resident:
// subq's Highway tile, libxsmm 1.17 (JIT) and Eigen 3.4. The figures behind the choice in
// docs/performance.md. Built only when libxsmm and Eigen are found; not part of the library.
//
//   NN: C[M x N] = A[M x K] B[K x N]          (P V, and S^T = K Q^T with Q^T packed once)
//   NT: C[M x N] = A[M x K] B[N x K]^T        (Q K^T with K as stored)
//
// For NT, candidates without a native transposed-B kernel pay for packing B^T inside the timed
// loop, as an attention kernel would once per KV tile.
#include <libxsmm.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "hwy/targets.h"
#include "src/cpu/gemm_tile.h"
#include "subq/random.h"

namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

double median_gflops(double flops, const std::function<void()>& fn) {
  // Enough repetitions for ~20 ms per sample; the median of 7 samples.
  for (int i = 0; i < 200; ++i) fn();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 200; ++i) fn();
  const double once =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 200;
  const int reps = std::max(1, static_cast<int>(0.02 / once));
  std::vector<double> g;
  for (int s = 0; s < 7; ++s) {
    const auto a = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) fn();
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
    g.push_back(flops * reps / t * 1e-9);
  }
  std::sort(g.begin(), g.end());
  return g[g.size() / 2];
}

void transpose(const float* in, int rows, int cols, float* out) {  // out[c][r] = in[r][c]
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) out[c * rows + r] = in[r * cols + c];
}

}  // namespace

int main() {
  libxsmm_init();
  std::printf("target %s, f32 lanes %zu\n",
              hwy::TargetName(hwy::SupportedTargets() & -hwy::SupportedTargets()),
              subq::cpu::simd_lanes_f32());
  std::printf("%-10s %-4s %-26s %10s\n", "MxNxK", "op", "candidate", "GFLOP/s");
  const int shapes[][3] = {{64, 64, 64},  {64, 64, 128}, {64, 128, 64},
                           {96, 96, 128}, {96, 128, 96}, {128, 128, 128}};
  for (const auto& s : shapes) {
    const int M = s[0], N = s[1], K = s[2];
    const double flops = 2.0 * M * N * K;
    std::vector<float> A(M * K), B(K * N), Bt(N * K), C(M * N), packed(K * N);
    subq::fill_normal(subq::TensorView(A.data(), subq::DType::kF32, {M, K}), 1);
    subq::fill_normal(subq::TensorView(B.data(), subq::DType::kF32, {K, N}), 2);
    transpose(B.data(), K, N, Bt.data());
    char shape[32];
    std::snprintf(shape, sizeof shape, "%dx%dx%d", M, N, K);
    auto report = [&](const char* op, const char* who, double g) {
      std::printf("%-10s %-4s %-26s %10.1f\n", shape, op, who, g);
    };

    // subq: Highway register-blocked tile.
    report("NN", "subq hwy tile", median_gflops(flops, [&] {
             subq::cpu::gemm_tile_f32(M, N, K, A.data(), K, 1, B.data(), N, C.data(), N,
                                      subq::cpu::GemmInit::kOverwrite);
           }));
    report("NT", "subq hwy tile + pack B^T", median_gflops(flops, [&] {
             transpose(Bt.data(), N, K, packed.data());
             subq::cpu::gemm_tile_f32(M, N, K, A.data(), K, 1, packed.data(), N, C.data(), N,
                                      subq::cpu::GemmInit::kOverwrite);
           }));
    // The S^T trick: C^T = B A^T computes the same numbers with B (as stored, [N x K]) as the
    // broadcast operand and A^T packed once per query tile (outside this loop).
    std::vector<float> At(K * M), Ct(N * M);
    transpose(A.data(), M, K, At.data());
    report("NT", "subq hwy tile, C^T = B A^T", median_gflops(flops, [&] {
             subq::cpu::gemm_tile_f32(N, M, K, Bt.data(), K, 1, At.data(), M, Ct.data(), M,
                                      subq::cpu::GemmInit::kOverwrite);
           }));

    // libxsmm is column-major: row-major C = A B is column-major C^T = B^T A^T.
    {
      const float alpha = 1, beta = 0;
      const libxsmm_blasint m = N, n = M, k = K, lda = N, ldb = K, ldc = N;
      const int flags = LIBXSMM_GEMM_FLAG_NONE, prefetch = LIBXSMM_PREFETCH_NONE;
      libxsmm_smmfunction f =
          libxsmm_smmdispatch(m, n, k, &lda, &ldb, &ldc, &alpha, &beta, &flags, &prefetch);
      if (f) {
        report("NN", "libxsmm JIT", median_gflops(flops, [&] { f(B.data(), A.data(), C.data()); }));
        report("NT", "libxsmm JIT + pack B^T", median_gflops(flops, [&] {
                 transpose(Bt.data(), N, K, packed.data());
                 f(packed.data(), A.data(), C.data());
               }));
      } else {
        std::printf("%-10s %-4s %-26s %10s\n", shape, "NN", "libxsmm JIT", "no kernel");
      }
      const int tflags = LIBXSMM_GEMM_FLAG_TRANS_A;  // column-major A is our B^T
      const libxsmm_blasint ldat = K;
      libxsmm_smmfunction ft =
          libxsmm_smmdispatch(m, n, k, &ldat, &ldb, &ldc, &alpha, &beta, &tflags, &prefetch);
      if (ft) {
        report("NT", "libxsmm JIT trans",
               median_gflops(flops, [&] { ft(Bt.data(), A.data(), C.data()); }));
      } else {
        std::printf("%-10s %-4s %-26s %10s\n", shape, "NT", "libxsmm JIT trans", "no kernel");
      }
    }

    // Eigen 3.4 (compiled for this machine with -march=native: it has no runtime dispatch).
    {
      Eigen::Map<RowMat> a(A.data(), M, K), b(B.data(), K, N), bt(Bt.data(), N, K),
          c(C.data(), M, N);
      report("NN", "Eigen", median_gflops(flops, [&] { c.noalias() = a * b; }));
      report("NT", "Eigen (transpose expr)",
             median_gflops(flops, [&] { c.noalias() = a * bt.transpose(); }));
    }

    // Naive triple loop, compiled with the same flags: the floor.
    report("NN", "naive loop", median_gflops(flops, [&] {
             for (int i = 0; i < M; ++i) {
               float* ci = C.data() + i * N;
               std::fill(ci, ci + N, 0.f);
               for (int kk = 0; kk < K; ++kk) {
                 const float aik = A[i * K + kk];
                 const float* bk = B.data() + kk * N;
                 for (int j = 0; j < N; ++j) ci[j] += aik * bk[j];
               }
             }
           }));
  }
  libxsmm_finalize();
  return 0;
}
