// Float64 reference of exact attention: the score matrix is materialised and the rules of
// docs/exact_attention.md are applied literally. Slow on purpose; used by the tests, by
// `subq check` and by `--impl ref`.
#pragma once

#include "src/flash_args.h"
#include "subq/dtype.h"

namespace subq::ref {

// `emulate` = kBF16 or kF16 rounds the scores, the probabilities and the output to that dtype,
// as a framework computing attention in that dtype would; this is the yardstick of the bf16
// error rule (testing_and_performance.md). kF64 (default) rounds nothing.
void flash_forward(const detail::FlashArgs& a, DType emulate = DType::kF64);

// dq, dk, dv from q, k, v and dout. It recomputes the probabilities from the scores in float64
// (it does not trust a.out or a.lse), so it is the exact derivative of flash_forward.
void flash_backward(const detail::FlashArgs& a);

// Decode against a cache whose new entries have already been appended.
void flash_decode(const detail::FlashDecodeArgs& a);

}  // namespace subq::ref
