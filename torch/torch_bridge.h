// torch <-> subq: views of torch tensors for the core ops, and the checks that come first.
//
// A torch tensor becomes a subq::TensorView without a copy (same data pointer, sizes and
// strides). Everything the core cannot take is refused here with a subq::Error naming the op and
// the argument: a tensor that is not on the CPU, or a dtype subq does not know. Shapes, strides
// and option ranges are then checked by the core op itself, with the same kind of message.
// Python sees a subq::Error as a RuntimeError carrying that message.
#pragma once

#include <ATen/Tensor.h>
#include <torch/library.h>

#include <optional>
#include <string_view>
#include <vector>

#include "subq/dtype.h"
#include "subq/error.h"
#include "subq/tensor.h"

namespace subq::torch_ops {

// True once this library is loaded: subq's kernels then run on libtorch's intra-op threads
// (at::parallel_for), sharing one team with libtorch's own ops; their count is
// at::get_num_threads() (torch.set_num_threads, OMP_NUM_THREADS).
bool torch_parallel_backend_installed();

// The view of `t` (undefined view for an undefined tensor). `op` and `arg` name it in errors.
TensorView to_view(const at::Tensor& t, std::string_view op, std::string_view arg);
TensorView to_view(const std::optional<at::Tensor>& t, std::string_view op, std::string_view arg);

DType to_subq_dtype(at::ScalarType t, std::string_view op, std::string_view arg);
at::ScalarType to_torch_dtype(DType dt);

// A new uninitialised CPU tensor. Core ops write every element of their outputs.
at::Tensor empty(const std::vector<int64_t>& shape, at::ScalarType dtype);
at::Tensor empty_like_shape(const at::Tensor& like, at::ScalarType dtype);
// The stand-in for an absent tensor output: a 0-element f32 tensor (schemas cannot return None).
at::Tensor absent();
inline bool present(const at::Tensor& t) {
  return t.defined() && t.numel() > 0;
}

// Gradients arriving from autograd may be undefined (unused output) or broadcast (stride 0, from
// expand); the kernels want D contiguous, so they get a contiguous copy when needed.
at::Tensor grad_or_zeros(const at::Tensor& grad, const at::Tensor& like);
at::Tensor contiguous_or_undefined(const at::Tensor& t);

// The way back from save_for_backward, which stores an absent optional input as an undefined
// tensor.
inline std::optional<at::Tensor> saved_optional(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}
// Undefined for an absent() stand-in (or an undefined tensor): what autograd expects of a
// gradient that does not exist, in both directions (an unused output's incoming gradient, the
// gradient of an input that was not given).
inline at::Tensor undefined_if_absent(const at::Tensor& t) {
  return present(t) ? t : at::Tensor();
}

// Whether the backward should compute the gradient of a saved optional input. (Not
// ctx->needs_input_grad: its index counts only the inputs that were given, so it shifts with
// every absent optional tensor.)
inline bool wants_grad(const at::Tensor& saved_input) {
  return saved_input.defined() && saved_input.requires_grad();
}

// Registers an op schema built at run time (the option lists are shared between ops).
inline void define(torch::Library& m, const std::string& schema) {
  m.def(torch::schema(schema.c_str()));
}

}  // namespace subq::torch_ops
