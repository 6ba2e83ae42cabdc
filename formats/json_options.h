// Reading the options of a JSON object strictly: each typed and bounded, with a default, and
// every key that was not read reported (a misspelt option is an error, never ignored). Used by
// the layer specs of config.json (model/mechanism.cc) and the training configs (train/).
#pragma once

#include <algorithm>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/strict_json.h"
#include "subq/error.h"

namespace subq::formats {

// Messages read "<where>: <key>: expected ..., got ...".
class JsonOptions {
 public:
  JsonOptions(const nlohmann::json& options, std::string where)
      : o_(options), where_(std::move(where)) {}

  // Every size option is bounded: with the checkpoint's own tensors bounding the model's
  // dimensions, these bounds keep what a mixer allocates from its options a small multiple of
  // the model (a 1 KB config cannot ask for a terabyte).
  int64_t integer(const char* key, int64_t def, int64_t min, int64_t max) {
    if (!take(key)) return def;
    const nlohmann::json& v = o_.at(key);
    SUBQ_CHECK(v.is_number_integer(), where_, ": ", key, ": expected an integer, got ",
               formats::json_excerpt(v));
    SUBQ_CHECK(!v.is_number_unsigned() || v.get<uint64_t>() <= static_cast<uint64_t>(max), where_,
               ": ", key, ": expected an integer in [", min, ", ", max, "], got ",
               formats::json_excerpt(v));
    const int64_t x = v.get<int64_t>();
    SUBQ_CHECK(x >= min && x <= max, where_, ": ", key, ": expected an integer in [", min, ", ",
               max, "], got ", x);
    return x;
  }
  double number(const char* key, double def) {
    if (!take(key)) return def;
    const nlohmann::json& v = o_.at(key);
    SUBQ_CHECK(v.is_number(), where_, ": ", key, ": expected a number, got ", v.dump());
    return v.get<double>();
  }
  bool boolean(const char* key, bool def) {
    if (!take(key)) return def;
    const nlohmann::json& v = o_.at(key);
    SUBQ_CHECK(v.is_boolean(), where_, ": ", key, ": expected true or false, got ", v.dump());
    return v.get<bool>();
  }
  std::string choice(const char* key, const std::string& def,
                     const std::vector<std::string>& allowed) {
    if (!take(key)) return def;
    const nlohmann::json& v = o_.at(key);
    const std::string s = v.is_string() ? v.get<std::string>() : v.dump();
    if (!v.is_string() || std::find(allowed.begin(), allowed.end(), s) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      throw Error(detail::concat(where_, ": ", key, ": expected one of ", list, ", got ", s));
    }
    return s;
  }
  std::string text(const char* key, const std::string& def) {
    if (!take(key)) return def;
    const nlohmann::json& v = o_.at(key);
    SUBQ_CHECK(v.is_string() && !v.get<std::string>().empty(), where_, ": ", key,
               ": expected a non-empty string, got ", v.dump());
    return v.get<std::string>();
  }
  const nlohmann::json* object(const char* key) {
    if (!take(key)) return nullptr;
    const nlohmann::json& v = o_.at(key);
    SUBQ_CHECK(v.is_object(), where_, ": ", key, ": expected an object, got ", v.dump());
    return &v;
  }
  // Every key not read is an error naming it ("... for <what>").
  void forbid_rest(const std::string& what) const {
    for (const auto& [k, v] : o_.items())
      SUBQ_CHECK(read_.count(k), where_, ": unknown option \"", k, "\" for ", what);
  }

 private:
  bool take(const char* key) {
    read_.insert(key);
    return o_.contains(key);
  }
  const nlohmann::json& o_;
  std::string where_;
  std::set<std::string> read_;
};

}  // namespace subq::formats
