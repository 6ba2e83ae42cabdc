// The split regexes of tokenizer.json pre-tokenizers, through PCRE2.
//
// Hugging Face compiles these patterns with Oniguruma. PCRE2 (with UTF and UCP) has the same
// backtracking, leftmost-first semantics, the same \p{L}/\p{N} categories and the lookahead
// that `\s+(?!\S)` needs; the one difference that matters here is \s: Oniguruma's is Unicode's
// White_Space property, PCRE2's also matches U+180E. The pattern is therefore rewritten to spell
// \s and \S out as White_Space before compiling.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace subq::formats {

class SplitRegex {
 public:
  // Throws subq::Error naming `where` if the pattern does not compile.
  SplitRegex(std::string_view pattern, std::string_view where);
  ~SplitRegex();
  SplitRegex(const SplitRegex&) = delete;
  SplitRegex& operator=(const SplitRegex&) = delete;

  // The [begin, end) byte ranges of the non-overlapping, non-empty matches in `text`, left to
  // right. `text` must be valid UTF-8 (checked once by the caller, so not here again).
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

  // Whether the whole of `text` matches (single-character tests of added tokens' flags).
  bool matches_whole(std::string_view text) const;

  // A pattern that matches `literal` exactly (Split's {"String": ...} form).
  static std::string escape(std::string_view literal);

 private:
  struct Compiled;
  std::unique_ptr<Compiled> compiled_;
};

// `pattern` with \s and \S replaced by explicit White_Space classes (see above).
std::string whitespace_as_white_space_property(std::string_view pattern, std::string_view where);

}  // namespace subq::formats
