// Element types and the scalar conversions between them.
//
// Inputs are f32, bf16 or f16; accumulation is always f32 (f64 in the reference). I32/I64 exist
// for index arrays such as cu_seqlens.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace subq {

enum class DType : uint8_t { kF32, kBF16, kF16, kF64, kI32, kI64 };

inline size_t dtype_size(DType dt) {
  switch (dt) {
    case DType::kBF16:
    case DType::kF16:
      return 2;
    case DType::kF32:
    case DType::kI32:
      return 4;
    default:
      return 8;  // kF64, kI64
  }
}
std::string_view dtype_name(DType dt);      // "f32", "bf16", ...
DType dtype_from_name(std::string_view s);  // throws subq::Error on an unknown name
inline bool is_float(DType dt) {
  return dt != DType::kI32 && dt != DType::kI64;
}

// bfloat16: the top 16 bits of an IEEE f32. Rounding is to nearest, ties to even; NaN stays NaN.
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t{h} << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

// IEEE binary16 with subnormals, infinities and NaN; round to nearest even.
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Rounds a value to the precision of `dt` (identity for f32/f64). Used by references and tests.
float round_to(DType dt, float x);

// Element i of an array of dtype dt, as double (any dtype), and the reverse (rounding to the
// nearest representable value; integers truncate).
double load_element(const void* base, DType dt, int64_t i);
void store_element(void* base, DType dt, int64_t i, double x);

// Converts n elements between float dtypes (f32, bf16, f16, f64); vectorised on the fast path.
void convert(const void* src, DType src_dt, void* dst, DType dst_dt, size_t n);

}  // namespace subq
