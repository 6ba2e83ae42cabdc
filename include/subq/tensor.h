// Tensors: an owning, 64-byte-aligned Tensor and a non-owning TensorView.
//
// Both carry a shape, strides (in elements, not bytes) and a dtype. Ops take views, so callers
// can pass any memory (their own buffers, a KV cache, a torch tensor) without copies; the op
// checks shapes, strides and dtypes before it reads anything.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "subq/dtype.h"

namespace subq {

inline constexpr int kMaxRank = 6;
inline constexpr size_t kTensorAlignment = 64;  // one cache line; also an AVX-512 vector

class TensorView {
 public:
  TensorView() = default;  // undefined: an absent optional argument
  // Contiguous (row-major) view.
  TensorView(void* data, DType dtype, std::initializer_list<int64_t> shape);
  TensorView(void* data, DType dtype, const std::vector<int64_t>& shape);
  // Strided view; strides are in elements and may be zero (broadcast) but not negative.
  TensorView(void* data, DType dtype, const std::vector<int64_t>& shape,
             const std::vector<int64_t>& strides);

  bool defined() const { return rank_ >= 0; }
  int rank() const { return rank_; }
  DType dtype() const { return dtype_; }
  void* data() const { return data_; }
  template <class T>
  T* data_as() const {
    return static_cast<T*>(data_);
  }
  // Negative dims count from the end, as in torch. Inline: kernels call these per row.
  int64_t size(int dim) const { return shape_[norm_dim(dim)]; }
  int64_t stride(int dim) const { return strides_[norm_dim(dim)]; }
  std::vector<int64_t> sizes() const;
  std::vector<int64_t> strides() const;
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;
  // A view of [start, start + length) along `dim`.
  TensorView narrow(int dim, int64_t start, int64_t length) const;
  // A 2-D view with its two dims swapped (the same memory, strides exchanged): Wᵀ for gemm.
  TensorView transposed() const;
  // "[2, 64, 8, 128] f32"
  std::string describe() const;

 private:
  int norm_dim(int dim) const {
    const int d = dim < 0 ? dim + rank_ : dim;
    if (d < 0 || d >= rank_) bad_dim(dim);
    return d;
  }
  [[noreturn]] void bad_dim(int dim) const;

  void* data_ = nullptr;
  DType dtype_ = DType::kF32;
  int rank_ = -1;
  std::array<int64_t, kMaxRank> shape_{};
  std::array<int64_t, kMaxRank> strides_{};
};

class Tensor {
 public:
  Tensor() = default;
  // Uninitialised, contiguous, 64-byte aligned.
  static Tensor empty(const std::vector<int64_t>& shape, DType dtype);
  static Tensor zeros(const std::vector<int64_t>& shape, DType dtype);
  // A contiguous copy of any view, converted to `dtype` (float dtypes only).
  static Tensor copy_of(const TensorView& src, DType dtype);
  static Tensor copy_of(const TensorView& src) { return copy_of(src, src.dtype()); }

  bool defined() const { return view_.defined(); }
  const TensorView& view() const { return view_; }
  operator const TensorView&() const { return view_; }  // NOLINT: tensors pass where views go
  void* data() const { return view_.data(); }
  template <class T>
  T* data_as() const {
    return view_.data_as<T>();
  }
  DType dtype() const { return view_.dtype(); }
  int64_t size(int dim) const { return view_.size(dim); }
  int64_t numel() const { return view_.numel(); }
  size_t nbytes() const { return view_.nbytes(); }
  std::vector<int64_t> sizes() const { return view_.sizes(); }

 private:
  std::shared_ptr<void> storage_;
  TensorView view_;
};

// Element access for tests and references: reads/writes element `index` (a multi-index) of any
// float view as double, whatever its dtype and strides.
double get_element(const TensorView& t, const std::vector<int64_t>& index);
void set_element(const TensorView& t, const std::vector<int64_t>& index, double value);
// The same at an element offset (sum of index * stride), unchecked: for reference loops that
// have already validated their indices.
double load_at(const TensorView& t, int64_t offset);
void store_at(const TensorView& t, int64_t offset, double value);
// Copies `src` into `dst` (same shape, any float dtypes and strides), converting element types.
void copy_into(const TensorView& src, const TensorView& dst);
// Fills a float view with a value.
void fill(const TensorView& t, double value);

// Aligned scratch memory for kernels. In debug and sanitizer builds (SUBQ_POISON_SCRATCH) it is
// filled with NaN, so that reading an element before writing it poisons the results and fails
// the tests.
class Scratch {
 public:
  Scratch() = default;
  explicit Scratch(size_t floats);
  float* data() const { return data_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(float* p) const;
  };
  std::unique_ptr<float, Free> data_;
  size_t size_ = 0;
};

}  // namespace subq
