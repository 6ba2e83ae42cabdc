// Internal: a validated short-convolution problem (src/conv.cc builds it).
#pragma once

#include <cstdint>
#include <vector>

#include "src/row_ptr.h"
#include "subq/conv.h"

namespace subq::detail {

struct ConvSeq {
  int64_t batch, start, T;
};

struct ConvArgs {
  TensorView x, weight, out, bias, h0, ht;  // forward
  TensorView dout, dht;                     // backward
  ShortConvGrads grads;
  int64_t D = 0, W = 0;
  bool silu = false, varlen = false;
  std::vector<ConvSeq> seqs;
};

// Row r of a [B, T, D] view (or [N, W - 1, D] state) as a pointer to its first element.
inline char* conv_row(const TensorView& t, int64_t b, int64_t r) {
  return static_cast<char*>(t.data()) +
         (b * t.stride(0) + r * t.stride(1)) * static_cast<int64_t>(dtype_size(t.dtype()));
}

}  // namespace subq::detail
