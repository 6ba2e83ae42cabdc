// Float64 reference of the linear + sliding-window hybrid, forward and backward, computed per
// query from the definition in include/subq/hybrid.h (O(T^2); for tests and --impl ref).
#pragma once

#include "src/hybrid_args.h"

namespace subq::ref {

void hybrid_forward(const detail::HybridArgs& a);
void hybrid_backward(const detail::HybridArgs& a);

}  // namespace subq::ref
