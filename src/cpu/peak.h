#pragma once

namespace subq::cpu {

// fp32 FMA GFLOP/s of `threads` threads running at once (set the pool to at least that many),
// measured for about `seconds`.
double measure_peak_gflops(int threads, double seconds = 0.6);

}  // namespace subq::cpu
