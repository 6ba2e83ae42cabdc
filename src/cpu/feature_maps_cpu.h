// Internal: the fast CPU feature maps.
#pragma once

#include "src/feature_maps_args.h"

namespace subq::cpu {

void feature_map_forward(const detail::FeatureArgs& a);   // src/cpu/feature_maps.cc
void feature_map_backward(const detail::FeatureArgs& a);  // src/cpu/feature_maps.cc

}  // namespace subq::cpu
