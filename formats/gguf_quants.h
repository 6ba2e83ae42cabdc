// The tensor types of GGUF files (ggml's block formats) and their dequantization to f32.
//
// A quantized row is a sequence of blocks; each block packs `block_size` values in
// `block_bytes` bytes with its own scale (and minimum). The layouts are ggml's (ggml-common.h);
// PyPI gguf's quants.py is the reference the tests compare against, type by type.
//   Q8_0   32 values: f16 d, int8 q[32]                      x = d·q
//   Q4_0   32 values: f16 d, 16 bytes of nibbles             x = d·(q − 8)
//   Q4_1   32 values: f16 d, f16 m, 16 bytes of nibbles      x = d·q + m
//   Q5_0   32 values: f16 d, 4 bytes of 5th bits, nibbles    x = d·(q − 16)
//   Q5_1   32 values: f16 d, f16 m, 5th bits, nibbles        x = d·q + m
//   Q2_K..Q6_K  256-value super-blocks of 16 or 32 sub-blocks, each with a 4- to 8-bit scale
//          (and minimum) that scales the super-block's f16 d (and dmin).
// Values are read in the order ggml writes them: nibble j of a 32-value block is value j (low
// nibble) or j + 16 (high nibble).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace subq::formats {

// ggml_type numbers as they appear in a GGUF tensor info. Only those subq reads are listed;
// gguf_type_traits() says which are known at all.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kBF16 = 30,
};

struct GgmlTypeTraits {
  std::string_view name;  // "Q4_1", as gguf-py and llama.cpp spell it
  uint32_t block_size;    // values per block (1 for the float types)
  uint32_t block_bytes;   // bytes per block
  bool supported;         // false: a known ggml type that subq does not dequantize (IQ*, ...)
};

// The traits of a type number, or nullopt for a number ggml does not define.
std::optional<GgmlTypeTraits> ggml_type_traits(uint32_t type);

// Dequantizes `n` values (a multiple of the block size) of a supported type from `src` (which
// holds n / block_size · block_bytes bytes) into `dst`. Any alignment of src is fine.
void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n);

}  // namespace subq::formats
