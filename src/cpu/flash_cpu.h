// Internal: the fast CPU kernels of exact attention. Arguments are already validated by
// src/flash.cc; every view has unit stride along its last dimension.
#pragma once

#include "src/flash_args.h"

namespace subq::cpu {

void flash_forward(const detail::FlashArgs& a);       // src/cpu/flash_fwd.cc
void flash_backward(const detail::FlashArgs& a);      // src/cpu/flash_bwd.cc
void flash_decode(const detail::FlashDecodeArgs& a);  // src/cpu/flash_decode.cc

}  // namespace subq::cpu
