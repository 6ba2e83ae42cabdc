#include "formats/tokenizer_bytes.h"

namespace subq::formats {

std::vector<int32_t> BytesTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() + 1);
  if (add_special_tokens) ids.push_back(kBos);
  for (const char c : text) ids.push_back(static_cast<uint8_t>(c));
  return ids;
}

std::string BytesTokenizer::decode_bytes(std::span<const int32_t> ids,
                                         bool skip_special_tokens) const {
  check_ids("BytesTokenizer::decode", ids);
  std::string out;
  out.reserve(ids.size());
  for (const int32_t id : ids) {
    if (id < 256) {
      out += static_cast<char>(id);
    } else if (!skip_special_tokens) {
      out += id == kBos ? "<|bos|>" : "<|eos|>";
    }
  }
  return out;
}

}  // namespace subq::formats
