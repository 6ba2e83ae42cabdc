// Internal: the fast CPU kernel of the causal depthwise short convolution.
#pragma once

#include "src/conv_args.h"

namespace subq::cpu {

void short_conv_forward(const detail::ConvArgs& a);   // src/cpu/conv.cc
void short_conv_backward(const detail::ConvArgs& a);  // src/cpu/conv.cc

}  // namespace subq::cpu
