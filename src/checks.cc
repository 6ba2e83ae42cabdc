#include "src/checks.h"

#include "subq/error.h"

namespace subq::detail::checks {

using detail::concat;

bool is_input_float(DType dt) {
  return dt == DType::kF32 || dt == DType::kBF16 || dt == DType::kF16;
}

void check_tensor(const char* where, const char* name, const TensorView& t, int rank) {
  SUBQ_CHECK_ARG(t.defined(), where, name, concat("a rank-", rank, " tensor"), "none");
  SUBQ_CHECK_ARG(t.rank() == rank, where, name, concat("rank ", rank), t.rank(), " (", t.describe(),
                 ")");
  SUBQ_CHECK_ARG(t.numel() > 0, where, name, "a non-empty tensor", t.describe());
  SUBQ_CHECK_ARG(t.data() != nullptr, where, name, "a data pointer", "nullptr");
}

// The float64 reference also takes f64 tensors (gradient checks by finite differences need
// them); the fast kernels take f32, bf16 and f16.
void check_float(const char* where, const char* name, const TensorView& t, bool allow_f64) {
  if (allow_f64 && t.dtype() == DType::kF64) return;
  SUBQ_CHECK_ARG(is_input_float(t.dtype()), where, name,
                 allow_f64 ? "dtype f32, bf16, f16 or f64" : "dtype f32, bf16 or f16",
                 dtype_name(t.dtype()), t.dtype() == DType::kF64 ? " (f64 needs impl = ref)" : "");
}

void check_input(const char* where, const char* name, const TensorView& t, int rank,
                 bool allow_f64) {
  check_tensor(where, name, t, rank);
  check_float(where, name, t, allow_f64);
}

void check_output(const char* where, const char* name, const TensorView& t,
                  const std::vector<int64_t>& shape, bool allow_f64) {
  check_tensor(where, name, t, static_cast<int>(shape.size()));
  SUBQ_CHECK_ARG(t.sizes() == shape, where, name, shape_str(shape), t.describe());
  check_float(where, name, t, allow_f64);
}

void check_same_dtype(const char* where, const char* name, const TensorView& t,
                      const TensorView& q) {
  SUBQ_CHECK_ARG(t.dtype() == q.dtype(), where, name,
                 concat("dtype ", dtype_name(q.dtype()), " (same as q)"), dtype_name(t.dtype()));
}

void check_attention_inputs(const char* where, std::initializer_list<NamedInput> inputs,
                            bool allow_f64) {
  for (const auto& [name, t] : inputs) check_input(where, name, *t, 4, allow_f64);
  const TensorView& q = *inputs.begin()->second;
  for (const auto& [name, t] : inputs) check_same_dtype(where, name, *t, q);
}

std::vector<int64_t> read_cu_seqlens(const char* where, const char* name, const TensorView& t,
                                     int64_t rows) {
  SUBQ_CHECK_ARG(t.rank() == 1, where, name, "a rank-1 tensor", t.describe());
  SUBQ_CHECK_ARG(t.dtype() == DType::kI32 || t.dtype() == DType::kI64, where, name,
                 "dtype i32 or i64", dtype_name(t.dtype()));
  SUBQ_CHECK_ARG(t.size(0) >= 2, where, name, "at least 2 offsets (N + 1 for N sequences)",
                 t.size(0));
  SUBQ_CHECK_ARG(t.data() != nullptr, where, name, "a data pointer", "nullptr");
  std::vector<int64_t> c(t.size(0));
  for (int64_t i = 0; i < t.size(0); ++i) c[i] = static_cast<int64_t>(load_at(t, i * t.stride(0)));
  SUBQ_CHECK_ARG(c[0] == 0, where, name, "offsets starting at 0", c[0]);
  for (size_t i = 1; i < c.size(); ++i)
    SUBQ_CHECK_ARG(c[i] >= c[i - 1], where, name, "non-decreasing offsets", c[i - 1], " then ",
                   c[i], " at index ", i);
  SUBQ_CHECK_ARG(c.back() <= rows, where, name, concat("offsets within the ", rows, " packed rows"),
                 c.back());
  return c;
}

void check_f32(const char* where, const char* name, const TensorView& t,
               const std::vector<int64_t>& shape) {
  check_tensor(where, name, t, static_cast<int>(shape.size()));
  SUBQ_CHECK_ARG(t.sizes() == shape, where, name, shape_str(shape), t.describe());
  SUBQ_CHECK_ARG(t.dtype() == DType::kF32, where, name, "dtype f32", dtype_name(t.dtype()));
}

void check_state(const char* where, const char* name, const TensorView& t,
                 const std::vector<int64_t>& shape, bool allow_f64) {
  if (allow_f64 && t.defined() && t.dtype() == DType::kF64) {
    check_tensor(where, name, t, static_cast<int>(shape.size()));
    SUBQ_CHECK_ARG(t.sizes() == shape, where, name, shape_str(shape), t.describe());
    return;
  }
  check_f32(where, name, t, shape);
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "shape [";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

UnitStride::UnitStride(TensorView& field, bool is_output) {
  if (!field.defined() || field.stride(-1) == 1 || field.size(-1) == 1) return;
  tmp_ = is_output ? Tensor::empty(field.sizes(), field.dtype()) : Tensor::copy_of(field);
  if (is_output) orig_ = field;
  field = tmp_.view();
}

void UnitStride::finish() const {
  if (orig_.defined()) copy_into(tmp_, orig_);
}

}  // namespace subq::detail::checks
