#include "formats/gguf_quants.h"

#include <cstring>

#include "subq/dtype.h"
#include "subq/error.h"

namespace subq::formats {
namespace {

// Values per K-quant super-block (ggml's QK_K).
constexpr int kQK = 256;

float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// ---- 32-value blocks -------------------------------------------------------------------------

void dequant_q8_0(const uint8_t* b, float* y) {  // 34 bytes: d, q[32]
  const float d = f16_at(b);
  for (int j = 0; j < 32; ++j) y[j] = d * static_cast<int8_t>(b[2 + j]);
}

// Q4_0 and Q4_1: `qs` holds 16 bytes; the low nibble of byte j is value j, the high one j + 16.
void dequant_nibbles(const uint8_t* qs, float d, float offset, float* y) {
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>(qs[j] & 0x0F) + offset;
    y[j + 16] = d * static_cast<float>(qs[j] >> 4) + offset;
  }
}

void dequant_q4_0(const uint8_t* b, float* y) {  // 18 bytes: d, qs[16]; x = d (q - 8)
  const float d = f16_at(b);
  dequant_nibbles(b + 2, d, -8.0f * d, y);
}

void dequant_q4_1(const uint8_t* b, float* y) {  // 20 bytes: d, m, qs[16]; x = d q + m
  dequant_nibbles(b + 4, f16_at(b), f16_at(b + 2), y);
}

// Q5_0 and Q5_1: qh holds the fifth bit of each of the 32 values (bit j of the little-endian
// u32 for value j).
void dequant_5bit(const uint8_t* qh_bytes, const uint8_t* qs, float d, float m, int zero,
                  float* y) {
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, 4);
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    y[j] = d * static_cast<float>(lo - zero) + m;
    y[j + 16] = d * static_cast<float>(hi - zero) + m;
  }
}

void dequant_q5_0(const uint8_t* b, float* y) {  // 22 bytes: d, qh[4], qs[16]; x = d (q - 16)
  dequant_5bit(b + 2, b + 6, f16_at(b), 0.0f, 16, y);
}

void dequant_q5_1(const uint8_t* b, float* y) {  // 24 bytes: d, m, qh[4], qs[16]; x = d q + m
  dequant_5bit(b + 4, b + 8, f16_at(b), f16_at(b + 2), 0, y);
}

// ---- 256-value K-quant super-blocks ----------------------------------------------------------

// Q2_K, 84 bytes: scales[16] (4-bit scale | 4-bit min), qs[64] (2-bit values), d, dmin.
void dequant_q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* q = b + 16;
  const float d = f16_at(b + 80), dmin = f16_at(b + 82);
  int is = 0;
  for (int half = 0; half < 2; ++half, q += 32) {  // 128 values use 32 bytes of qs
    for (int shift = 0; shift < 8; shift += 2) {
      for (int part = 0; part < 2; ++part) {  // 16 values per sub-block
        const uint8_t sc = scales[is++];
        const float dl = d * static_cast<float>(sc & 0x0F), ml = dmin * static_cast<float>(sc >> 4);
        for (int l = 0; l < 16; ++l)
          *y++ = dl * static_cast<float>((q[l + 16 * part] >> shift) & 3) - ml;
      }
    }
  }
}

// Q3_K, 110 bytes: hmask[32] (the third bit), qs[64] (low 2 bits), scales[12] (16 6-bit
// scales, offset 32), d.
void dequant_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hm = b;
  const uint8_t* q = b + 32;
  const float d_all = f16_at(b + 108);
  // The 16 scales: low 4 bits in bytes 0..7 (two per byte), high 2 bits in bytes 8..11.
  const uint8_t* s = b + 96;
  int8_t scales[16];
  for (int j = 0; j < 16; ++j) {
    const int low = j < 8 ? (s[j] & 0x0F) : (s[j - 8] >> 4);
    const int high = (s[8 + (j % 4)] >> (2 * (j / 4))) & 3;
    scales[j] = static_cast<int8_t>((low | (high << 4)) - 32);
  }
  int is = 0;
  uint8_t m = 1;
  for (int half = 0; half < 2; ++half, q += 32) {
    for (int shift = 0; shift < 8; shift += 2, m = static_cast<uint8_t>(m << 1)) {
      for (int part = 0; part < 2; ++part) {
        const float dl = d_all * static_cast<float>(scales[is++]);
        for (int l = 0; l < 16; ++l) {
          const int idx = l + 16 * part;
          const int v = ((q[idx] >> shift) & 3) - ((hm[idx] & m) ? 0 : 4);
          *y++ = dl * static_cast<float>(v);
        }
      }
    }
  }
}

// The 6-bit scale and min of sub-block j (0..7) of Q4_K and Q5_K, packed in 12 bytes.
void scale_min_k4(int j, const uint8_t* q, float* sc, float* mn) {
  int d, m;
  if (j < 4) {
    d = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    d = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
  *sc = static_cast<float>(d);
  *mn = static_cast<float>(m);
}

// Q4_K, 144 bytes: d, dmin, scales[12], qs[128]; 8 sub-blocks of 32, x = d·sc·q − dmin·m.
void dequant_q4_k(const uint8_t* b, float* y) {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  for (int is = 0; is < 8; is += 2, q += 32) {
    float sc1, m1, sc2, m2;
    scale_min_k4(is, scales, &sc1, &m1);
    scale_min_k4(is + 1, scales, &sc2, &m2);
    for (int l = 0; l < 32; ++l) *y++ = d * sc1 * static_cast<float>(q[l] & 0x0F) - dmin * m1;
    for (int l = 0; l < 32; ++l) *y++ = d * sc2 * static_cast<float>(q[l] >> 4) - dmin * m2;
  }
}

// Q5_K, 176 bytes: d, dmin, scales[12], qh[32] (fifth bits), qs[128].
void dequant_q5_k(const uint8_t* b, float* y) {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 48;
  uint8_t u1 = 1, u2 = 2;
  for (int is = 0; is < 8; is += 2, ql += 32) {
    float sc1, m1, sc2, m2;
    scale_min_k4(is, scales, &sc1, &m1);
    scale_min_k4(is + 1, scales, &sc2, &m2);
    for (int l = 0; l < 32; ++l)
      *y++ = d * sc1 * static_cast<float>((ql[l] & 0x0F) + ((qh[l] & u1) ? 16 : 0)) - dmin * m1;
    for (int l = 0; l < 32; ++l)
      *y++ = d * sc2 * static_cast<float>((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - dmin * m2;
    u1 = static_cast<uint8_t>(u1 << 2);
    u2 = static_cast<uint8_t>(u2 << 2);
  }
}

// Q6_K, 210 bytes: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], d.
void dequant_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = f16_at(b + 208);
  for (int half = 0; half < 2; ++half, y += 128, ql += 64, qh += 32, sc += 8) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is] * q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2] * q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4] * q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6] * q4);
    }
  }
}

using BlockFn = void (*)(const uint8_t*, float*);

BlockFn block_fn(GgmlType type) {
  switch (type) {
    case GgmlType::kQ8_0:
      return dequant_q8_0;
    case GgmlType::kQ4_0:
      return dequant_q4_0;
    case GgmlType::kQ4_1:
      return dequant_q4_1;
    case GgmlType::kQ5_0:
      return dequant_q5_0;
    case GgmlType::kQ5_1:
      return dequant_q5_1;
    case GgmlType::kQ2_K:
      return dequant_q2_k;
    case GgmlType::kQ3_K:
      return dequant_q3_k;
    case GgmlType::kQ4_K:
      return dequant_q4_k;
    case GgmlType::kQ5_K:
      return dequant_q5_k;
    case GgmlType::kQ6_K:
      return dequant_q6_k;
    default:
      return nullptr;
  }
}

}  // namespace

std::optional<GgmlTypeTraits> ggml_type_traits(uint32_t type) {
  // ggml.h's type numbers with their block sizes (ggml-common.h). Numbers 4, 5 and 31..33 were
  // removed from ggml and are unknown here too.
  switch (type) {
    case 0:
      return GgmlTypeTraits{"F32", 1, 4, true};
    case 1:
      return GgmlTypeTraits{"F16", 1, 2, true};
    case 2:
      return GgmlTypeTraits{"Q4_0", 32, 18, true};
    case 3:
      return GgmlTypeTraits{"Q4_1", 32, 20, true};
    case 6:
      return GgmlTypeTraits{"Q5_0", 32, 22, true};
    case 7:
      return GgmlTypeTraits{"Q5_1", 32, 24, true};
    case 8:
      return GgmlTypeTraits{"Q8_0", 32, 34, true};
    case 9:
      return GgmlTypeTraits{"Q8_1", 32, 40, false};
    case 10:
      return GgmlTypeTraits{"Q2_K", kQK, 84, true};
    case 11:
      return GgmlTypeTraits{"Q3_K", kQK, 110, true};
    case 12:
      return GgmlTypeTraits{"Q4_K", kQK, 144, true};
    case 13:
      return GgmlTypeTraits{"Q5_K", kQK, 176, true};
    case 14:
      return GgmlTypeTraits{"Q6_K", kQK, 210, true};
    case 15:
      return GgmlTypeTraits{"Q8_K", kQK, 292, false};
    case 16:
      return GgmlTypeTraits{"IQ2_XXS", kQK, 66, false};
    case 17:
      return GgmlTypeTraits{"IQ2_XS", kQK, 74, false};
    case 18:
      return GgmlTypeTraits{"IQ3_XXS", kQK, 98, false};
    case 19:
      return GgmlTypeTraits{"IQ1_S", kQK, 50, false};
    case 20:
      return GgmlTypeTraits{"IQ4_NL", 32, 18, false};
    case 21:
      return GgmlTypeTraits{"IQ3_S", kQK, 110, false};
    case 22:
      return GgmlTypeTraits{"IQ2_S", kQK, 82, false};
    case 23:
      return GgmlTypeTraits{"IQ4_XS", kQK, 136, false};
    case 24:
      return GgmlTypeTraits{"I8", 1, 1, false};
    case 25:
      return GgmlTypeTraits{"I16", 1, 2, false};
    case 26:
      return GgmlTypeTraits{"I32", 1, 4, false};
    case 27:
      return GgmlTypeTraits{"I64", 1, 8, false};
    case 28:
      return GgmlTypeTraits{"F64", 1, 8, false};
    case 29:
      return GgmlTypeTraits{"IQ1_M", kQK, 56, false};
    case 30:
      return GgmlTypeTraits{"BF16", 1, 2, true};
    case 34:
      return GgmlTypeTraits{"TQ1_0", kQK, 54, false};
    case 35:
      return GgmlTypeTraits{"TQ2_0", kQK, 66, false};
    case 39:
      return GgmlTypeTraits{"MXFP4", 32, 17, false};
    case 40:
      return GgmlTypeTraits{"NVFP4", 64, 36, false};
    case 41:
      return GgmlTypeTraits{"Q1_0", 128, 18, false};
    default:
      return std::nullopt;
  }
}

void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n) {
  const auto traits = ggml_type_traits(static_cast<uint32_t>(type));
  SUBQ_CHECK(traits && traits->supported,
             "dequantize_row: type: expected a supported ggml type, got ",
             static_cast<uint32_t>(type));
  SUBQ_CHECK(n >= 0 && n % traits->block_size == 0, "dequantize_row: n: expected a multiple of ",
             traits->block_size, ", got ", n);
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case GgmlType::kF16:
      convert(src, DType::kF16, dst, DType::kF32, static_cast<size_t>(n));
      return;
    case GgmlType::kBF16:
      convert(src, DType::kBF16, dst, DType::kF32, static_cast<size_t>(n));
      return;
    default:
      break;
  }
  const BlockFn fn = block_fn(type);
  const auto* b = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n; i += traits->block_size, b += traits->block_bytes) fn(b, dst + i);
}

}  // namespace subq::formats
