#include "subq/random.h"

#include <cmath>
#include <vector>

#include "subq/error.h"

namespace subq {

uint64_t Rng::next_u64() {
  // SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and passes BigCrush for this use.
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double Rng::uniform() {
  return static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
}

double Rng::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  // Box-Muller; 1 - u keeps the log argument in (0, 1].
  const double u1 = 1.0 - uniform(), u2 = uniform();
  const double r = std::sqrt(-2.0 * std::log(u1));
  spare_ = r * std::sin(2.0 * M_PI * u2);
  has_spare_ = true;
  return r * std::cos(2.0 * M_PI * u2);
}

namespace {
template <class Gen>
void fill_with(const TensorView& t, Gen&& gen) {
  SUBQ_CHECK(t.defined() && is_float(t.dtype()), "random fill: float tensor expected, got ",
             t.describe());
  // Generate in logical (row-major) order so the values do not depend on the strides.
  const int64_t n = t.numel();
  if (n == 0) return;
  if (t.is_contiguous()) {  // the common case, without per-element index arithmetic
    for (int64_t e = 0; e < n; ++e) store_at(t, e, gen());
    return;
  }
  std::vector<int64_t> idx(t.rank(), 0);
  for (int64_t e = 0; e < n; ++e) {
    set_element(t, idx, gen());
    for (int i = t.rank() - 1; i >= 0; --i) {
      if (++idx[i] < t.size(i)) break;
      idx[i] = 0;
    }
  }
}
}  // namespace

void fill_normal(const TensorView& t, uint64_t seed, double mean, double stddev) {
  Rng rng(seed);
  fill_with(t, [&] { return mean + stddev * rng.normal(); });
}

void fill_uniform(const TensorView& t, uint64_t seed, double lo, double hi) {
  Rng rng(seed);
  fill_with(t, [&] { return lo + (hi - lo) * rng.uniform(); });
}

uint64_t seed_for(uint64_t seed, uint64_t index) {
  Rng r(seed ^ (index * 0x9E3779B97F4A7C15ull));
  return r.next_u64();
}

}  // namespace subq
