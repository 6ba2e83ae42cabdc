// Internal: addressing rows of [B, T, heads, dim] views, shared by every op family.
#pragma once

#include <cstdint>

#include "subq/tensor.h"

namespace subq::detail {

// Address of row `row`, head `h` of batch entry `b` in a [B, T, heads, dim] view.
inline char* row_ptr(const TensorView& t, int64_t b, int64_t row, int64_t h) {
  return static_cast<char*>(t.data()) + (b * t.stride(0) + row * t.stride(1) + h * t.stride(2)) *
                                            static_cast<int64_t>(dtype_size(t.dtype()));
}

}  // namespace subq::detail
