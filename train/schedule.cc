#include "train/schedule.h"

#include <algorithm>
#include <cmath>

namespace subq::train {

double lr_at(const Schedule& s, int64_t step) {
  if (step < s.warmup_steps)
    return s.lr * static_cast<double>(step + 1) / static_cast<double>(s.warmup_steps);
  const int64_t decay = std::max<int64_t>(1, s.steps - s.warmup_steps);
  const double p = std::clamp(static_cast<double>(step - s.warmup_steps) / decay, 0.0, 1.0);
  return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + std::cos(M_PI * p)));
}

}  // namespace subq::train
