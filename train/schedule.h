// The learning-rate schedule of `subq train`: linear warm-up, then cosine decay.
//
//   step < warmup:  lr · (step + 1) / warmup
//   after:          lr · (r + (1 − r) · ½ (1 + cos(π · p))),  p = (step − warmup) / (steps −
//   warmup)
//
// with r = min_lr_ratio (0: down to zero, as transformers' get_cosine_schedule_with_warmup).
// `step` counts from 0; the warm-up reaches lr at its last step, so no step runs at lr 0.
#pragma once

#include <cstdint>

namespace subq::train {

struct Schedule {
  double lr = 1e-3;
  int64_t warmup_steps = 0;
  int64_t steps = 1;
  double min_lr_ratio = 0;
};

double lr_at(const Schedule& s, int64_t step);

}  // namespace subq::train
