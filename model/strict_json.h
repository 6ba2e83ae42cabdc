// JSON parsing for the files subq reads (safetensors headers, config.json, index files).
//
// nlohmann-json keeps one of two duplicate keys without a word; a checkpoint whose header names
// a tensor twice is ambiguous (which one does a reader take?), so these parsers reject it.
#pragma once

#include <string_view>

#include <nlohmann/json.hpp>

namespace subq::model {

// Parses `text` as one JSON value. Throws subq::Error "<source>: invalid JSON: <why>" on a
// syntax error, invalid UTF-8 or a NUL byte, and "<source>: duplicate key '<k>'" when an object
// names a key twice.
nlohmann::json parse_json_strict(std::string_view text, std::string_view source);

// "object", "array", "string", "integer", "number", "boolean", "null": for messages.
const char* json_type_name(const nlohmann::json& j);

}  // namespace subq::model
