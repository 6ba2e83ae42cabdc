#include "torch/torch_bridge.h"

#include <ATen/ATen.h>

#include "subq/error.h"

namespace subq::torch_ops {

DType to_subq_dtype(at::ScalarType t, std::string_view op, std::string_view arg) {
  switch (t) {
    case at::kFloat:
      return DType::kF32;
    case at::kBFloat16:
      return DType::kBF16;
    case at::kHalf:
      return DType::kF16;
    case at::kDouble:
      return DType::kF64;
    case at::kInt:
      return DType::kI32;
    case at::kLong:
      return DType::kI64;
    default:
      throw_arg_error(op, arg, "dtype float32, bfloat16, float16, float64, int32 or int64",
                      c10::toString(t));
  }
}

at::ScalarType to_torch_dtype(DType dt) {
  switch (dt) {
    case DType::kF32:
      return at::kFloat;
    case DType::kBF16:
      return at::kBFloat16;
    case DType::kF16:
      return at::kHalf;
    case DType::kF64:
      return at::kDouble;
    case DType::kI32:
      return at::kInt;
    case DType::kI64:
      return at::kLong;
  }
  throw Error("to_torch_dtype: unknown subq dtype");
}

TensorView to_view(const at::Tensor& t, std::string_view op, std::string_view arg) {
  if (!t.defined()) return {};
  SUBQ_CHECK_ARG(t.device().is_cpu(), op, arg, "a CPU tensor (subq has no CUDA kernels yet)",
                 t.device().str());
  SUBQ_CHECK_ARG(t.dim() <= kMaxRank, op, arg, detail::concat("at most ", kMaxRank, " dims"),
                 t.dim(), " dims");
  SUBQ_CHECK_ARG(!t.is_conj() && !t.is_neg(), op, arg, "a materialised tensor",
                 "a lazily conjugated or negated view");
  const DType dt = to_subq_dtype(t.scalar_type(), op, arg);
  // torch strides are never negative, so any torch view is a valid subq view; the op decides
  // whether it accepts the layout (most want the last dim contiguous).
  return TensorView(t.data_ptr(), dt, t.sizes().vec(), t.strides().vec());
}

TensorView to_view(const std::optional<at::Tensor>& t, std::string_view op, std::string_view arg) {
  return t.has_value() ? to_view(*t, op, arg) : TensorView{};
}

at::Tensor empty(const std::vector<int64_t>& shape, at::ScalarType dtype) {
  return at::empty(shape, at::TensorOptions().dtype(dtype).device(at::kCPU));
}

at::Tensor empty_like_shape(const at::Tensor& like, at::ScalarType dtype) {
  return empty(like.sizes().vec(), dtype);
}

at::Tensor absent() {
  return empty({0}, at::kFloat);
}

at::Tensor grad_or_zeros(const at::Tensor& grad, const at::Tensor& like) {
  if (!grad.defined()) return at::zeros_like(like);
  return grad.contiguous();
}

at::Tensor contiguous_or_undefined(const at::Tensor& t) {
  return t.defined() ? t.contiguous() : t;
}

}  // namespace subq::torch_ops
