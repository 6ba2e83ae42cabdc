// Float64 reference of the causal depthwise short convolution, forward and backward, written
// from the definition (docs/short_conv.md).
#pragma once

#include "src/conv_args.h"

namespace subq::ref {

void short_conv_forward(const detail::ConvArgs& a);
void short_conv_backward(const detail::ConvArgs& a);

}  // namespace subq::ref
