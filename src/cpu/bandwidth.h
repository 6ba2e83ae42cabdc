#pragma once

#include <cstddef>

namespace subq::cpu {

// Streaming-read bandwidth in GB/s (1e9 bytes per second) of `threads` threads reading disjoint
// parts of one buffer of `bytes` at once (set the pool to at least that many). The buffer is much
// larger than the caches, so this is the memory bound of a decode step, which reads every
// weight once. Best of several rounds, as peak.
double measure_read_bandwidth_gbs(int threads, size_t bytes = size_t{1} << 30);

}  // namespace subq::cpu
