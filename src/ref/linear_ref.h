// Float64 reference of (gated) linear attention: the recurrent form, which is the definition
// (docs/linear_attention.md), applied literally token by token. Backward by reverse-mode
// through the recurrence, with every state kept. Slow on purpose; used by tests, `subq check`
// and `--impl ref`.
#pragma once

#include "src/linear_args.h"

namespace subq::ref {

void linear_forward(const detail::LinearArgs& a);
void linear_backward(const detail::LinearArgs& a);

}  // namespace subq::ref
