#include "subq/tensor.h"

#include <sys/mman.h>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <new>

#include "subq/error.h"

namespace subq {

namespace {

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

std::string join(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// Large buffers are 2 MiB aligned and marked for transparent huge pages. Kernels walk one head of
// a [B, T, H, D] tensor at a time, one row every H * D elements: with 4 KiB pages nearly every
// row is a new page and a TLB miss; 2 MiB pages make those walks cheap (measured in
// docs/performance.md).
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kHugeThreshold = size_t{4} << 20;

void* aligned_alloc_bytes(size_t bytes) {
  const size_t align = bytes >= kHugeThreshold ? kHugePage : kTensorAlignment;
  // std::aligned_alloc needs a size that is a multiple of the alignment.
  const size_t rounded = (bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, rounded ? rounded : align);
  if (!p) throw Error(detail::concat("out of memory allocating ", bytes, " bytes"));
#ifdef MADV_HUGEPAGE
  if (align == kHugePage) madvise(p, rounded, MADV_HUGEPAGE);  // a hint; failure is harmless
#endif
  return p;
}

}  // namespace

TensorView::TensorView(void* data, DType dtype, std::initializer_list<int64_t> shape)
    : TensorView(data, dtype, std::vector<int64_t>(shape)) {}

TensorView::TensorView(void* data, DType dtype, const std::vector<int64_t>& shape)
    : TensorView(data, dtype, shape, contiguous_strides(shape)) {}

TensorView::TensorView(void* data, DType dtype, const std::vector<int64_t>& shape,
                       const std::vector<int64_t>& strides)
    : data_(data), dtype_(dtype) {
  SUBQ_CHECK_ARG(shape.size() <= kMaxRank, "TensorView", "shape",
                 detail::concat("rank <= ", kMaxRank), shape.size());
  SUBQ_CHECK_ARG(strides.size() == shape.size(), "TensorView", "strides",
                 detail::concat(shape.size(), " strides"), strides.size());
  for (size_t i = 0; i < shape.size(); ++i) {
    SUBQ_CHECK_ARG(shape[i] >= 0, "TensorView", "shape", "sizes >= 0", join(shape));
    SUBQ_CHECK_ARG(strides[i] >= 0, "TensorView", "strides", "strides >= 0", join(strides));
    shape_[i] = shape[i];
    strides_[i] = strides[i];
  }
  rank_ = static_cast<int>(shape.size());
}

void TensorView::bad_dim(int dim) const {
  throw Error(detail::concat("TensorView: dim ", dim, " out of range for rank ", rank_));
}

std::vector<int64_t> TensorView::sizes() const {
  return std::vector<int64_t>(shape_.begin(), shape_.begin() + std::max(rank_, 0));
}
std::vector<int64_t> TensorView::strides() const {
  return std::vector<int64_t>(strides_.begin(), strides_.begin() + std::max(rank_, 0));
}

int64_t TensorView::numel() const {
  if (!defined()) return 0;
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= shape_[i];
  return n;
}

bool TensorView::is_contiguous() const {
  int64_t s = 1;
  for (int i = rank_; i-- > 0;) {
    if (shape_[i] != 1 && strides_[i] != s) return false;
    s *= shape_[i];
  }
  return true;
}

TensorView TensorView::narrow(int dim, int64_t start, int64_t length) const {
  const int d = norm_dim(dim);
  SUBQ_CHECK(start >= 0 && length >= 0 && start + length <= shape_[d], "TensorView::narrow: [",
             start, ", ", start + length, ") out of range for size ", shape_[d]);
  TensorView v = *this;
  v.shape_[d] = length;
  v.data_ = static_cast<char*>(data_) + start * strides_[d] * dtype_size(dtype_);
  return v;
}

TensorView TensorView::transposed() const {
  SUBQ_CHECK(rank() == 2, "TensorView::transposed: expected a 2-D view, got ", describe());
  TensorView v = *this;
  std::swap(v.shape_[0], v.shape_[1]);
  std::swap(v.strides_[0], v.strides_[1]);
  return v;
}

std::string TensorView::describe() const {
  if (!defined()) return "(undefined)";
  return join(sizes()) + " " + std::string(dtype_name(dtype_));
}

Tensor Tensor::empty(const std::vector<int64_t>& shape, DType dtype) {
  int64_t n = 1;
  for (int64_t s : shape) {
    SUBQ_CHECK_ARG(s >= 0, "Tensor::empty", "shape", "sizes >= 0", join(shape));
    SUBQ_CHECK(s == 0 || n <= std::numeric_limits<int64_t>::max() / s,
               "Tensor::empty: shape overflows: ", join(shape));
    n *= s;
  }
  Tensor t;
  void* p = aligned_alloc_bytes(static_cast<size_t>(n) * dtype_size(dtype));
  t.storage_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  t.view_ = TensorView(p, dtype, shape);
  return t;
}

Tensor Tensor::zeros(const std::vector<int64_t>& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.data(), 0, t.nbytes());
  return t;
}

Tensor Tensor::copy_of(const TensorView& src, DType dtype) {
  Tensor t = empty(src.sizes(), dtype);
  copy_into(src, t.view());
  return t;
}

namespace {

// Calls fn(src_offset, dst_offset, n) for each innermost row of two same-shaped views.
template <class Fn>
void for_each_row(const TensorView& a, const TensorView& b, Fn&& fn) {
  const int r = a.rank();
  if (r == 0) {
    fn(0, 0, 1);
    return;
  }
  if (a.numel() == 0) return;
  std::vector<int64_t> idx(r, 0);
  const int64_t inner = a.size(r - 1);
  while (true) {
    int64_t oa = 0, ob = 0;
    for (int i = 0; i < r - 1; ++i) {
      oa += idx[i] * a.stride(i);
      ob += idx[i] * b.stride(i);
    }
    fn(oa, ob, inner);
    int i = r - 2;
    for (; i >= 0; --i) {
      if (++idx[i] < a.size(i)) break;
      idx[i] = 0;
    }
    if (i < 0) break;
  }
}

}  // namespace

double load_at(const TensorView& t, int64_t off) {
  return load_element(t.data(), t.dtype(), off);
}

void store_at(const TensorView& t, int64_t off, double x) {
  store_element(t.data(), t.dtype(), off, x);
}

namespace {

int64_t offset_of(const TensorView& t, const std::vector<int64_t>& index) {
  SUBQ_CHECK(static_cast<int>(index.size()) == t.rank(), "element index of rank ", index.size(),
             " for a tensor of rank ", t.rank());
  int64_t off = 0;
  for (int i = 0; i < t.rank(); ++i) {
    SUBQ_CHECK(index[i] >= 0 && index[i] < t.size(i), "element index ", join(index),
               " out of range for ", t.describe());
    off += index[i] * t.stride(i);
  }
  return off;
}

}  // namespace

double get_element(const TensorView& t, const std::vector<int64_t>& index) {
  return load_at(t, offset_of(t, index));
}

void set_element(const TensorView& t, const std::vector<int64_t>& index, double value) {
  store_at(t, offset_of(t, index), value);
}

void copy_into(const TensorView& src, const TensorView& dst) {
  SUBQ_CHECK_ARG(src.sizes() == dst.sizes(), "copy_into", "dst", join(src.sizes()),
                 join(dst.sizes()));
  const bool dense_rows = src.rank() == 0 || (src.stride(-1) == 1 && dst.stride(-1) == 1);
  for_each_row(src, dst, [&](int64_t os, int64_t od, int64_t n) {
    if (dense_rows && is_float(src.dtype()) && is_float(dst.dtype())) {
      convert(static_cast<const char*>(src.data()) + os * dtype_size(src.dtype()), src.dtype(),
              static_cast<char*>(dst.data()) + od * dtype_size(dst.dtype()), dst.dtype(),
              static_cast<size_t>(n));
    } else {
      const int64_t ss = src.rank() ? src.stride(-1) : 0, sd = dst.rank() ? dst.stride(-1) : 0;
      for (int64_t i = 0; i < n; ++i) store_at(dst, od + i * sd, load_at(src, os + i * ss));
    }
  });
}

void fill(const TensorView& t, double value) {
  for_each_row(t, t, [&](int64_t o, int64_t, int64_t n) {
    const int64_t s = t.rank() ? t.stride(-1) : 0;
    for (int64_t i = 0; i < n; ++i) store_at(t, o + i * s, value);
  });
}

Scratch::Scratch(size_t floats) : size_(floats) {
  data_.reset(static_cast<float*>(aligned_alloc_bytes(floats * sizeof(float))));
#ifdef SUBQ_POISON_SCRATCH
  for (size_t i = 0; i < floats; ++i) data_.get()[i] = std::numeric_limits<float>::quiet_NaN();
#endif
}

void Scratch::Free::operator()(float* p) const {
  std::free(p);
}

}  // namespace subq
