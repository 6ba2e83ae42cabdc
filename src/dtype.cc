#include "subq/dtype.h"

#include <cmath>

#include "subq/error.h"

namespace subq {

std::string_view dtype_name(DType dt) {
  switch (dt) {
    case DType::kF32:
      return "f32";
    case DType::kBF16:
      return "bf16";
    case DType::kF16:
      return "f16";
    case DType::kF64:
      return "f64";
    case DType::kI32:
      return "i32";
    case DType::kI64:
      return "i64";
  }
  return "?";
}

DType dtype_from_name(std::string_view s) {
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16, DType::kF64, DType::kI32, DType::kI64})
    if (s == dtype_name(dt)) return dt;
  throw_arg_error("dtype_from_name", "dtype", "one of f32, bf16, f16, f64, i32, i64",
                  detail::concat('"', s, '"'));
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: value = mant * 2^-24
      float f = std::ldexp(static_cast<float>(mant), -24);
      std::memcpy(&u, &f, 4);
      u |= sign;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);  // inf or NaN (payload kept)
  } else {
    u = sign | ((exp + 112) << 23) | (mant << 13);  // rebias 15 -> 127
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00;   // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00;  // rounds to >= 65520: inf
  if (abs < 0x38800000u) {                       // below the smallest normal half, 2^-14
    // Subnormal half: value / 2^-24 rounded to nearest even, done exactly in float arithmetic.
    float a;
    std::memcpy(&a, &abs, 4);
    const float scaled = a * 16777216.0f;    // * 2^24, exact
    const float r = std::nearbyint(scaled);  // current rounding mode: to nearest even
    return sign | static_cast<uint16_t>(r);
  }
  // Normal: keep 10 mantissa bits, round to nearest even on the 13 dropped bits.
  uint32_t v = abs + 0xfffu + ((abs >> 13) & 1u);
  v -= 112u << 23;  // rebias 127 -> 15
  return sign | static_cast<uint16_t>(v >> 13);
}

float round_to(DType dt, float x) {
  switch (dt) {
    case DType::kBF16:
      return bf16_to_f32(f32_to_bf16(x));
    case DType::kF16:
      return f16_to_f32(f32_to_f16(x));
    default:
      return x;
  }
}

double load_element(const void* base, DType dt, int64_t i) {
  switch (dt) {
    case DType::kF32:
      return static_cast<const float*>(base)[i];
    case DType::kF64:
      return static_cast<const double*>(base)[i];
    case DType::kBF16:
      return bf16_to_f32(static_cast<const uint16_t*>(base)[i]);
    case DType::kF16:
      return f16_to_f32(static_cast<const uint16_t*>(base)[i]);
    case DType::kI32:
      return static_cast<const int32_t*>(base)[i];
    case DType::kI64:
      return static_cast<double>(static_cast<const int64_t*>(base)[i]);
  }
  return 0;
}

void store_element(void* base, DType dt, int64_t i, double x) {
  switch (dt) {
    case DType::kF32:
      static_cast<float*>(base)[i] = static_cast<float>(x);
      break;
    case DType::kF64:
      static_cast<double*>(base)[i] = x;
      break;
    case DType::kBF16:
      static_cast<uint16_t*>(base)[i] = f32_to_bf16(static_cast<float>(x));
      break;
    case DType::kF16:
      static_cast<uint16_t*>(base)[i] = f32_to_f16(static_cast<float>(x));
      break;
    case DType::kI32:
      static_cast<int32_t*>(base)[i] = static_cast<int32_t>(x);
      break;
    case DType::kI64:
      static_cast<int64_t*>(base)[i] = static_cast<int64_t>(x);
      break;
  }
}

void convert(const void* src, DType src_dt, void* dst, DType dst_dt, size_t n) {
  SUBQ_CHECK(is_float(src_dt) && is_float(dst_dt), "convert: float dtypes only, got ",
             dtype_name(src_dt), " -> ", dtype_name(dst_dt));
  if (src_dt == dst_dt) {
    std::memcpy(dst, src, n * dtype_size(src_dt));
    return;
  }
  // Scalar: this runs on tensor set-up and copies, not inside the kernels (which convert tiles
  // with SIMD as they load them).
  for (size_t i = 0; i < n; ++i) {
    const auto k = static_cast<int64_t>(i);
    store_element(dst, dst_dt, k, load_element(src, src_dt, k));
  }
}

}  // namespace subq
