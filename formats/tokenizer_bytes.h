// The built-in byte-level tokenizer: no file, no training, every text encodes losslessly.
//
// Layout (vocab_size 258):
//   0..255  the byte of that value (the UTF-8 encoding of the text, one id per byte)
//   256     BOS, added at the start by encode(..., add_special_tokens = true)
//   257     EOS, never added by encode; a model emits it to end a generation
// Decoding with skip_special_tokens = false writes BOS and EOS as "<|bos|>" and "<|eos|>"; the
// text "<|bos|>" itself encodes to its bytes, never to 256.
#pragma once

#include "formats/tokenizer.h"

namespace subq::formats {

class BytesTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kBos = 256;
  static constexpr int32_t kEos = 257;
  static constexpr int32_t kVocabSize = 258;

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
  std::string decode_bytes(std::span<const int32_t> ids, bool skip_special_tokens) const override;
  int32_t vocab_size() const override { return kVocabSize; }
  std::optional<int32_t> bos_id() const override { return kBos; }
  std::optional<int32_t> eos_id() const override { return kEos; }
  bool is_special(int32_t id) const override { return id == kBos || id == kEos; }
  std::string_view kind() const override { return "bytes"; }
};

}  // namespace subq::formats
