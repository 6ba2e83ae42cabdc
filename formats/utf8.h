// UTF-8 helpers shared by the tokenizers: validation, lossy repair and the "is the end of this
// byte string a character cut in half" test that streaming decode needs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace subq::formats {

// Number of bytes of `text`, from the start, that are valid UTF-8; text.size() when all are.
size_t valid_utf8_prefix_length(std::string_view text);

inline bool is_valid_utf8(std::string_view text) {
  return valid_utf8_prefix_length(text) == text.size();
}

// Length of the trailing bytes of `text` that start a well-formed UTF-8 sequence but stop before
// it is complete (0..3). A streaming decoder holds these back: more bytes may complete them.
size_t incomplete_utf8_suffix_length(std::string_view text);

// `bytes` with every ill-formed subsequence replaced by U+FFFD, one per maximal subpart, the
// Unicode recommendation that Rust's String::from_utf8_lossy follows (so that decode() matches
// Hugging Face tokenizers byte for byte).
std::string utf8_lossy(std::string_view bytes);

// Appends the UTF-8 encoding of `code_point` (which must be a Unicode scalar value).
void append_utf8(std::string& out, char32_t code_point);

}  // namespace subq::formats
