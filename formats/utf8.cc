#include "formats/utf8.h"

namespace subq::formats {
namespace {

// Length of the well-formed UTF-8 sequence that starts at text[i] and how far it got: returns
// {length, complete}. length counts the lead byte and the continuation bytes that are valid at
// their position (Unicode Table 3-7, which rules out overlongs, surrogates and > U+10FFFF);
// length 0 means text[i] cannot start a sequence at all.
struct SequenceScan {
  size_t length;
  bool complete;
};

SequenceScan scan_sequence(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(text[k]); };
  const uint8_t lead = byte(i);
  if (lead < 0x80) return {1, true};
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the first continuation byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 1;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 2;
    if (lead == 0xE0) lo = 0xA0;  // no overlongs
    if (lead == 0xED) hi = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 3;
    if (lead == 0xF0) lo = 0x90;  // no overlongs
    if (lead == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {0, false};
  }
  size_t got = 1;
  for (size_t k = 0; k < need; ++k) {
    if (i + got >= text.size()) return {got, false};
    const uint8_t c = byte(i + got);
    const uint8_t min = k == 0 ? lo : 0x80, max = k == 0 ? hi : 0xBF;
    if (c < min || c > max) return {got, false};
    ++got;
  }
  return {got, true};
}

}  // namespace

size_t valid_utf8_prefix_length(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const SequenceScan s = scan_sequence(text, i);
    if (!s.complete) return i;
    i += s.length;
  }
  return i;
}

size_t incomplete_utf8_suffix_length(std::string_view text) {
  // A sequence is at most 4 bytes, so only a lead byte among the last 3 can be cut off.
  const size_t from = text.size() > 3 ? text.size() - 3 : 0;
  for (size_t i = text.size(); i-- > from;) {
    const uint8_t c = static_cast<uint8_t>(text[i]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for its lead
    const SequenceScan s = scan_sequence(text, i);
    // Incomplete only if every byte up to the end was valid so far.
    return !s.complete && s.length > 0 && i + s.length == text.size() ? s.length : 0;
  }
  return 0;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    const SequenceScan s = scan_sequence(bytes, i);
    if (s.complete) {
      out.append(bytes.substr(i, s.length));
      i += s.length;
    } else {
      out.append("\xEF\xBF\xBD");         // U+FFFD for the maximal subpart
      i += s.length == 0 ? 1 : s.length;  // which is at least the offending lead byte
    }
  }
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace subq::formats
