// `subq check`: every op at small random shapes against its float64 reference. One PASS or
// FAIL line per op; the exit status is non-zero if any fails. How a user verifies a build.
#pragma once

#include <cstdint>

namespace subq::cli {

struct CheckConfig {
  uint64_t seed = 1;
  int threads = 0;  // 0: all
};

// Returns the process exit status: 0 when every op passes, 1 otherwise.
int run_check(const CheckConfig& cfg);

}  // namespace subq::cli
