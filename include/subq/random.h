// Seeded random fills for tests and benches. The generator is our own (SplitMix64 and a
// Box-Muller transform), so a seed gives the same numbers on every platform and compiler.
#pragma once

#include <cstdint>

#include "subq/tensor.h"

namespace subq {

// Standard normal values times `stddev` plus `mean`, rounded to the view's dtype.
void fill_normal(const TensorView& t, uint64_t seed, double mean = 0.0, double stddev = 1.0);
// Uniform values in [lo, hi), rounded to the view's dtype.
void fill_uniform(const TensorView& t, uint64_t seed, double lo, double hi);

// The seed of item `index` of a stream seeded `seed` (a trial, a batch row): one SplitMix64
// draw, so neighbouring indices get unrelated seeds and adding items leaves the others as they
// were.
uint64_t seed_for(uint64_t seed, uint64_t index);

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull) {}
  uint64_t next_u64();
  double uniform();  // [0, 1)
  double normal();

 private:
  uint64_t state_;
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace subq
