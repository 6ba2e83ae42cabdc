// JSON parsing for the files subq reads (safetensors headers, config.json, index files).
//
// nlohmann-json keeps one of two duplicate keys without a word; a checkpoint whose header names
// a tensor twice is ambiguous (which one does a reader take?), so these parsers reject it.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace subq::formats {

// Parses `text` as one JSON value. Throws subq::Error "<source>: invalid JSON: <why>" on a
// syntax error, invalid UTF-8 or a NUL byte, and "<source>: duplicate key '<k>'" when an object
// names a key twice.
// Nesting deeper than kMaxJsonDepth is refused: nlohmann-json parses iteratively, but copies,
// compares and dumps recursively, so a file of a million '[' would overflow the stack later.
inline constexpr int kMaxJsonDepth = 64;
nlohmann::json parse_json_strict(std::string_view text, std::string_view source);

// The value as JSON text, cut to about 80 characters: for error messages about values that
// may be arbitrarily large.
std::string json_excerpt(const nlohmann::json& j);

// "object", "array", "string", "integer", "number", "boolean", "null": for messages.
const char* json_type_name(const nlohmann::json& j);

}  // namespace subq::formats
