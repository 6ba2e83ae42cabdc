// Internal: the argument checks every public entry point shares. Each throws subq::Error whose
// message names the function, the argument, what was expected and what was given.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "subq/tensor.h"

namespace subq::detail::checks {

bool is_input_float(DType dt);  // f32, bf16 or f16
// Defined, of the given rank, non-empty, with data.
void check_tensor(const char* where, const char* name, const TensorView& t, int rank);
// f32, bf16 or f16; f64 too when `allow_f64` (the float64 reference accepts it).
void check_float(const char* where, const char* name, const TensorView& t, bool allow_f64);
void check_input(const char* where, const char* name, const TensorView& t, int rank,
                 bool allow_f64 = false);
// Exactly `shape`, and a float dtype.
void check_output(const char* where, const char* name, const TensorView& t,
                  const std::vector<int64_t>& shape, bool allow_f64 = false);
// Exactly `shape`, and f32 (states, gates' gradients, lse).
void check_f32(const char* where, const char* name, const TensorView& t,
               const std::vector<int64_t>& shape);
// A state or its gradient: exactly `shape`, f32 (or f64 when `allow_f64`: the reference).
void check_state(const char* where, const char* name, const TensorView& t,
                 const std::vector<int64_t>& shape, bool allow_f64);
void check_same_dtype(const char* where, const char* name, const TensorView& t,
                      const TensorView& q);
// The [B, T, H, D] inputs of an attention op: each checked by check_input (rank 4), and all of
// q's dtype. The first entry is q.
using NamedInput = std::pair<const char*, const TensorView*>;
void check_attention_inputs(const char* where, std::initializer_list<NamedInput> inputs,
                            bool allow_f64 = false);
// int32/int64 [N + 1] offsets starting at 0, non-decreasing, at most `rows`.
std::vector<int64_t> read_cu_seqlens(const char* where, const char* name, const TensorView& t,
                                     int64_t rows);
std::string shape_str(const std::vector<int64_t>& shape);  // "shape [2, 3]"

// The fast kernels read rows with unit stride along the last dim. A view without it is replaced
// by a contiguous copy (inputs) or by a temporary that finish() copies back (outputs); every
// other view is read in place whatever its strides.
class UnitStride {
 public:
  UnitStride(TensorView& field, bool is_output);
  void finish() const;

 private:
  Tensor tmp_;
  TensorView orig_;
};

}  // namespace subq::detail::checks
