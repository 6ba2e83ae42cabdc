#include "formats/strict_json.h"

#include <set>
#include <string>
#include <vector>

#include "subq/error.h"

namespace subq::formats {

nlohmann::json parse_json_strict(std::string_view text, std::string_view source) {
  using nlohmann::json;
  // One set of keys per open object; the callback sees keys in document order, before
  // nlohmann's DOM builder overwrites the earlier value.
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  const json::parser_callback_t track_keys = [&](int depth, json::parse_event_t event,
                                                 json& parsed) {
    SUBQ_CHECK(depth <= kMaxJsonDepth, source, ": invalid JSON: nested deeper than ", kMaxJsonDepth,
               " levels");
    switch (event) {
      case json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key:
        if (!open_objects.empty() &&
            !open_objects.back().insert(parsed.get<std::string>()).second && duplicate.empty())
          duplicate = parsed.get<std::string>();
        break;
      default:
        break;
    }
    return true;
  };
  // nlohmann stops at a NUL byte as if the input ended there, so "{}\0<anything>" would parse;
  // a raw NUL is never valid JSON (inside strings it must be escaped), so refuse it here.
  const size_t nul = text.find('\0');
  SUBQ_CHECK(nul == std::string_view::npos, source, ": invalid JSON: NUL byte at offset ", nul);
  json result;
  try {
    result = json::parse(text.begin(), text.end(), track_keys);
  } catch (const json::exception& e) {
    throw Error(detail::concat(source, ": invalid JSON: ", e.what()));
  }
  SUBQ_CHECK(duplicate.empty(), source, ": duplicate key '", duplicate, "'");
  return result;
}

std::string json_excerpt(const nlohmann::json& j) {
  constexpr size_t kMax = 80;
  std::string s = j.dump();
  if (s.size() > kMax) s = s.substr(0, kMax) + "...";
  return s;
}

const char* json_type_name(const nlohmann::json& j) {
  if (j.is_object()) return "object";
  if (j.is_array()) return "array";
  if (j.is_string()) return "string";
  if (j.is_number_integer()) return "integer";
  if (j.is_number()) return "number";
  if (j.is_boolean()) return "boolean";
  if (j.is_null()) return "null";
  return "binary";
}

}  // namespace subq::formats
