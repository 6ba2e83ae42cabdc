// Float64 references of the feature maps, forward and backward, written from the formulas in
// include/subq/feature_maps.h one token at a time.
#pragma once

#include "src/feature_maps_args.h"

namespace subq::ref {

void feature_map_forward(const detail::FeatureArgs& a);
void feature_map_backward(const detail::FeatureArgs& a);

}  // namespace subq::ref
