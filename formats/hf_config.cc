#include "formats/hf_config.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "formats/atomic_file.h"
#include "formats/strict_json.h"
#include "subq/error.h"

namespace subq::formats {
namespace {

using nlohmann::json;

// Sizes above this are corrupt files, and keeping them below 2^31 keeps every product of two
// sizes (a weight's element count) inside int64.
constexpr int64_t kMaxSize = int64_t{1} << 31;

// Reads fields of one JSON object, with messages "<source>: <field>: expected ..., got ...".
class FieldReader {
 public:
  FieldReader(const json& object, std::string_view source) : j_(object), source_(source) {}

  bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }
  const json& at(const char* key) const { return j_[key]; }

  [[noreturn]] void fail(std::string_view key, std::string_view expected, const json& given) const {
    throw Error(
        detail::concat(source_, ": ", key, ": expected ", expected, ", got ", json_excerpt(given)));
  }
  [[noreturn]] void fail_msg(std::string_view key, std::string_view message) const {
    throw Error(detail::concat(source_, ": ", key, ": ", message));
  }

  // A positive integer below kMaxSize; nullopt when absent (or null) and not required.
  std::optional<int64_t> size(const char* key, bool required) const {
    if (!has(key)) {
      if (required) fail_msg(key, "missing (a positive integer is required)");
      return std::nullopt;
    }
    const json& v = at(key);
    if (!v.is_number_integer() || v.get<int64_t>() <= 0 ||
        (v.is_number_unsigned() && v.get<uint64_t>() >= static_cast<uint64_t>(kMaxSize)) ||
        v.get<int64_t>() >= kMaxSize)
      fail(key, detail::concat("a positive integer below 2^31"), v);
    return v.get<int64_t>();
  }

  double positive_number(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    const json& v = at(key);
    if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() <= 0)
      fail(key, "a positive finite number", v);
    return v.get<double>();
  }

  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!at(key).is_boolean()) fail(key, "true or false", at(key));
    return at(key).get<bool>();
  }

  int64_t token_id(std::string_view key, const json& v) const {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
        (v.is_number_unsigned() && v.get<uint64_t>() >= static_cast<uint64_t>(kMaxSize)) ||
        v.get<int64_t>() >= kMaxSize)
      fail(key, "a non-negative integer token id", v);
    return v.get<int64_t>();
  }

 private:
  const json& j_;
  std::string_view source_;
};

// The parameters of a scaled rope_type (linear, llama3, yarn), with transformers' defaults.
void parse_rope_scaling(const FieldReader& f, const std::string& type, RopeParameters& rp) {
  if (!f.has("factor")) f.fail_msg("factor", "missing (required for rope_type " + type + ")");
  rp.factor = f.positive_number("factor", 1.0);
  rp.original_max_position_embeddings =
      f.size("original_max_position_embeddings", false).value_or(0);
  if (type == "llama3") {
    for (const char* k :
         {"low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
      if (!f.has(k)) f.fail_msg(k, "missing (required for rope_type llama3)");
    rp.low_freq_factor = f.positive_number("low_freq_factor", 1.0);
    rp.high_freq_factor = f.positive_number("high_freq_factor", 4.0);
    if (!(rp.high_freq_factor > rp.low_freq_factor))
      f.fail_msg("high_freq_factor", "must be above low_freq_factor");
  } else if (type == "yarn") {
    rp.beta_fast = f.positive_number("beta_fast", 32.0);
    rp.beta_slow = f.positive_number("beta_slow", 1.0);
    if (f.has("attention_factor")) rp.attention_factor = f.positive_number("attention_factor", 1);
    if (f.has("mscale")) rp.mscale = f.positive_number("mscale", 1);
    if (f.has("mscale_all_dim")) rp.mscale_all_dim = f.positive_number("mscale_all_dim", 1);
    rp.truncate = f.boolean("truncate", true);
  }
}

// transformers 5 writes "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0};
// earlier versions "rope_theta" and "rope_scaling" (null, or the scaling parameters). The types
// subq implements are default, linear, llama3 and yarn, each with exactly the fields
// transformers reads for it; any other type or field is an error naming it, never ignored.
void parse_rope(const FieldReader& r, LlamaConfig& c, std::string_view source) {
  c.rope_theta = r.positive_number("rope_theta", 10000.0);
  const char* found = nullptr;
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    if (!r.has(key)) continue;
    const json& p = r.at(key);
    if (!p.is_object()) r.fail(key, "an object or null", p);
    // Both present (a file may keep rope_scaling for older readers): they must say the same.
    const RopeParameters first = c.rope;
    const bool second = found != nullptr;
    found = key;
    const std::string where = detail::concat(source, ": ", key);
    const FieldReader f(p, where);
    std::string type = "default";
    for (const char* type_key : {"rope_type", "type"}) {
      if (!p.contains(type_key)) continue;
      if (!p[type_key].is_string()) f.fail(type_key, "a string", p[type_key]);
      type = p[type_key].get<std::string>();
    }
    std::set<std::string> allowed = {"rope_type", "type", "rope_theta"};
    if (type == "linear") {
      allowed.insert("factor");
    } else if (type == "llama3") {
      allowed.insert(
          {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"});
    } else if (type == "yarn") {
      allowed.insert({"factor", "original_max_position_embeddings", "attention_factor", "beta_fast",
                      "beta_slow", "mscale", "mscale_all_dim", "truncate"});
    } else if (type != "default") {
      throw Error(detail::concat(where, ": unsupported rope_type \"", type,
                                 "\" (subq implements default, linear, llama3 and yarn)"));
    }
    for (const auto& [name, value] : p.items())
      if (!allowed.count(name) && !value.is_null())
        throw Error(
            detail::concat(where, ": unsupported field '", name, "' for rope_type \"", type, "\""));
    if (p.contains("rope_theta") && !p["rope_theta"].is_null()) {
      const double t = f.positive_number("rope_theta", 0);
      if (r.has("rope_theta") && t != c.rope_theta)
        throw Error(
            detail::concat(where, ".rope_theta ", t, " disagrees with rope_theta ", c.rope_theta));
      c.rope_theta = t;
    }
    RopeParameters& rp = c.rope;
    rp = RopeParameters{};
    rp.type = type;
    if (type != "default") parse_rope_scaling(f, type, rp);
    if (second && !(rp == first))
      throw Error(detail::concat(where, ": disagrees with rope_parameters"));
  }
}

// The family's fields: biases, q/k norms and sliding windows, each checked against what that
// family's transformers class reads (a Mistral with mlp_bias would not load there either).
void parse_family(const FieldReader& r, LlamaConfig& c) {
  const std::string& t = c.model_type;
  const bool llama = t == "llama", qwen2 = t == "qwen2", qwen3 = t == "qwen3";
  const bool attention_bias = r.boolean("attention_bias", false);
  if (attention_bias && !(llama || qwen3))
    r.fail_msg("attention_bias", "true is not supported for model_type " + t);
  c.attention_qkv_bias = attention_bias || qwen2;  // Qwen2 always has q, k, v biases
  c.attention_o_bias = attention_bias;
  c.mlp_bias = r.boolean("mlp_bias", false);
  if (c.mlp_bias && !llama) r.fail_msg("mlp_bias", "true is not supported for model_type " + t);
  c.qk_norm = qwen3;

  // Sliding windows. Mistral: sliding_window (or null) applies to every layer. Qwen2/3:
  // only with use_sliding_window, on the layers layer_types marks "sliding_attention" (else
  // those from max_window_layers on), as their configs' __post_init__ decides.
  std::optional<int64_t> window;
  if (t == "mistral") {
    window = r.size("sliding_window", false);
  } else if (qwen2 || qwen3) {
    if (r.boolean("use_sliding_window", false)) window = r.size("sliding_window", true);
  } else if (r.has("sliding_window")) {
    r.fail_msg("sliding_window", "not supported for model_type llama");
  }
  c.attention_windows.assign(static_cast<size_t>(c.num_hidden_layers), 0);
  if (r.has("layer_types")) {
    const json& lt = r.at("layer_types");
    if (!lt.is_array() || static_cast<int64_t>(lt.size()) != c.num_hidden_layers)
      r.fail("layer_types", detail::concat("an array of ", c.num_hidden_layers, " layer types"),
             lt);
    for (size_t i = 0; i < lt.size(); ++i) {
      if (lt[i] == "full_attention") continue;
      if (lt[i] != "sliding_attention")
        r.fail(detail::concat("layer_types[", i, "]"),
               "\"full_attention\" or \"sliding_attention\"", lt[i]);
      // transformers gives such a layer no window when the config has none.
      if (window) c.attention_windows[i] = *window;
    }
  } else if (window) {
    const int64_t first = (qwen2 || qwen3) ? r.size("max_window_layers", false).value_or(28) : 0;
    for (int64_t i = first; i < c.num_hidden_layers; ++i) c.attention_windows[i] = *window;
  }
}

std::vector<LayerSpec> parse_subq_section(const FieldReader& r, int64_t num_layers,
                                          std::string_view source) {
  if (!r.has("subq")) return std::vector<LayerSpec>(num_layers);
  const json& s = r.at("subq");
  if (!s.is_object()) r.fail("subq", "an object {\"version\": 1, \"layers\": [...]}", s);
  for (const auto& [key, value] : s.items())
    if (key != "version" && key != "layers")
      throw Error(detail::concat(source, ": subq: unknown field '", key,
                                 "' (expected version and layers)"));
  if (!s.contains("version") || s["version"] != 1)
    throw Error(detail::concat(source, ": subq.version: expected 1, got ",
                               s.contains("version") ? json_excerpt(s["version"]) : "nothing"));
  if (!s.contains("layers") || !s["layers"].is_array())
    throw Error(
        detail::concat(source, ": subq.layers: expected an array with one entry per layer"));
  const json& layers = s["layers"];
  if (static_cast<int64_t>(layers.size()) != num_layers)
    throw Error(detail::concat(source, ": subq.layers: expected ", num_layers,
                               " entries (num_hidden_layers), got ", layers.size()));
  std::vector<LayerSpec> specs;
  for (size_t i = 0; i < layers.size(); ++i) {
    const json& entry = layers[i];
    const std::string where = detail::concat(source, ": subq.layers[", i, "]");
    SUBQ_CHECK(entry.is_object(), where, ": expected an object with a \"mechanism\", got ",
               json_excerpt(entry));
    SUBQ_CHECK(entry.contains("mechanism") && entry["mechanism"].is_string(), where,
               ": mechanism: expected a string, got ",
               entry.contains("mechanism") ? json_excerpt(entry["mechanism"]) : "nothing");
    LayerSpec spec;
    spec.mechanism = entry["mechanism"].get<std::string>();
    SUBQ_CHECK(std::find(std::begin(kLayerMechanisms), std::end(kLayerMechanisms),
                         spec.mechanism) != std::end(kLayerMechanisms),
               where,
               ": mechanism: expected one of softmax, linear, hybrid, short_conv, mamba2, got \"",
               spec.mechanism, "\"");
    spec.options = entry;
    spec.options.erase("mechanism");
    specs.push_back(std::move(spec));
  }
  return specs;
}

json subq_section(const LlamaConfig& c) {
  json layers = json::array();
  for (const LayerSpec& spec : c.layers) {
    json entry = spec.options.is_object() ? spec.options : json::object();
    entry["mechanism"] = spec.mechanism;
    layers.push_back(std::move(entry));
  }
  return json{{"version", 1}, {"layers", std::move(layers)}};
}

}  // namespace

void validate_llama_config(const LlamaConfig& c, std::string_view source) {
  const auto positive = [&](const char* name, int64_t v) {
    SUBQ_CHECK(v > 0 && v < kMaxSize, source, ": ", name,
               ": expected a positive integer below 2^31, got ", v);
  };
  positive("hidden_size", c.hidden_size);
  positive("num_hidden_layers", c.num_hidden_layers);
  SUBQ_CHECK(c.num_hidden_layers <= kMaxLayers, source, ": num_hidden_layers: expected at most ",
             kMaxLayers, ", got ", c.num_hidden_layers);
  positive("num_attention_heads", c.num_attention_heads);
  positive("num_key_value_heads", c.num_key_value_heads);
  positive("head_dim", c.head_dim);
  positive("intermediate_size", c.intermediate_size);
  positive("vocab_size", c.vocab_size);
  positive("max_position_embeddings", c.max_position_embeddings);
  SUBQ_CHECK(c.num_attention_heads % c.num_key_value_heads == 0, source,
             ": num_key_value_heads: expected a divisor of num_attention_heads (",
             c.num_attention_heads, "), got ", c.num_key_value_heads);
  SUBQ_CHECK(std::isfinite(c.rope_theta) && c.rope_theta > 0, source,
             ": rope_theta: expected a positive finite number, got ", c.rope_theta);
  SUBQ_CHECK(std::isfinite(c.rms_norm_eps) && c.rms_norm_eps > 0, source,
             ": rms_norm_eps: expected a positive finite number, got ", c.rms_norm_eps);
  SUBQ_CHECK(static_cast<int64_t>(c.layers.size()) == c.num_hidden_layers, source,
             ": subq.layers: expected ", c.num_hidden_layers, " entries (num_hidden_layers), got ",
             c.layers.size());
  for (size_t i = 0; i < c.layers.size(); ++i) {
    SUBQ_CHECK(std::find(std::begin(kLayerMechanisms), std::end(kLayerMechanisms),
                         c.layers[i].mechanism) != std::end(kLayerMechanisms),
               source, ": subq.layers[", i, "]: mechanism: expected one of softmax, linear, ",
               "hybrid, short_conv, mamba2, got \"", c.layers[i].mechanism, "\"");
    SUBQ_CHECK(c.layers[i].options.is_object(), source, ": subq.layers[", i,
               "]: options must be a JSON object");
  }
  SUBQ_CHECK(c.fields.is_object(), source, ": fields must be a JSON object");
  SUBQ_CHECK(std::find(std::begin(kModelTypes), std::end(kModelTypes), c.model_type) !=
                 std::end(kModelTypes),
             source, ": model_type: expected llama, mistral, qwen2 or qwen3, got \"", c.model_type,
             "\"");
  SUBQ_CHECK(c.attention_windows.empty() ||
                 static_cast<int64_t>(c.attention_windows.size()) == c.num_hidden_layers,
             source, ": expected one attention window per layer (", c.num_hidden_layers, "), got ",
             c.attention_windows.size());
  for (int64_t w : c.attention_windows)
    SUBQ_CHECK(w >= 0 && w < kMaxSize, source, ": sliding_window: expected 0 to 2^31, got ", w);
  const RopeParameters& rp = c.rope;
  SUBQ_CHECK(
      rp.type == "default" || rp.type == "linear" || rp.type == "llama3" || rp.type == "yarn",
      source, ": rope_type: expected default, linear, llama3 or yarn, got \"", rp.type, "\"");
  SUBQ_CHECK(std::isfinite(rp.factor) && rp.factor > 0, source,
             ": rope factor: expected a positive finite number, got ", rp.factor);
  SUBQ_CHECK(
      rp.original_max_position_embeddings >= 0 && rp.original_max_position_embeddings < kMaxSize,
      source, ": original_max_position_embeddings: expected 0 to 2^31, got ",
      rp.original_max_position_embeddings);
}

LlamaConfig parse_llama_config(std::string_view json_text, std::string_view source) {
  const json root = parse_json_strict(json_text, source);
  SUBQ_CHECK(root.is_object(), source, ": expected a JSON object, got ", json_type_name(root));
  const FieldReader r(root, source);
  LlamaConfig c;
  c.fields = root;

  if (r.has("model_type")) {
    const json& mt = r.at("model_type");
    if (!mt.is_string() || std::find(std::begin(kModelTypes), std::end(kModelTypes),
                                     mt.get<std::string>()) == std::end(kModelTypes))
      r.fail("model_type", "\"llama\", \"mistral\", \"qwen2\" or \"qwen3\" (or absent)", mt);
    c.model_type = mt.get<std::string>();
  }
  if (r.has("hidden_act") && r.at("hidden_act") != "silu")
    r.fail("hidden_act", "\"silu\" (the SwiGLU MLP of LLaMA)", r.at("hidden_act"));

  c.hidden_size = *r.size("hidden_size", true);
  c.num_hidden_layers = *r.size("num_hidden_layers", true);
  // Before anything is sized by it (per-layer vectors here, tensors in the model).
  if (c.num_hidden_layers > kMaxLayers)
    r.fail("num_hidden_layers", detail::concat("at most ", kMaxLayers), r.at("num_hidden_layers"));
  c.num_attention_heads = *r.size("num_attention_heads", true);
  c.num_key_value_heads = r.size("num_key_value_heads", false).value_or(c.num_attention_heads);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    r.fail("num_key_value_heads",
           detail::concat("a divisor of num_attention_heads (", c.num_attention_heads, ")"),
           r.at("num_key_value_heads"));
  if (auto head_dim = r.size("head_dim", false)) {
    c.head_dim = *head_dim;
  } else {
    if (c.hidden_size % c.num_attention_heads != 0)
      r.fail_msg("hidden_size",
                 detail::concat(c.hidden_size, " is not divisible by num_attention_heads (",
                                c.num_attention_heads, ") and no head_dim is given"));
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  c.intermediate_size = *r.size("intermediate_size", true);
  c.vocab_size = *r.size("vocab_size", true);
  c.max_position_embeddings = r.size("max_position_embeddings", false).value_or(2048);
  c.rms_norm_eps = r.positive_number("rms_norm_eps", 1e-6);
  parse_rope(r, c, source);
  parse_family(r, c);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);

  if (r.has("bos_token_id")) c.bos_token_id = r.token_id("bos_token_id", r.at("bos_token_id"));
  if (r.has("eos_token_id")) {
    const json& eos = r.at("eos_token_id");
    if (eos.is_array()) {
      for (const json& id : eos) c.eos_token_ids.push_back(r.token_id("eos_token_id", id));
    } else {
      c.eos_token_ids.push_back(r.token_id("eos_token_id", eos));
    }
  }
  for (const char* key : {"dtype", "torch_dtype"}) {
    if (!r.has(key)) continue;
    if (!r.at(key).is_string()) r.fail(key, "a string such as \"bfloat16\"", r.at(key));
    if (!c.dtype.empty() && c.dtype != r.at(key).get<std::string>())
      r.fail_msg(key, detail::concat("\"", r.at(key).get<std::string>(),
                                     "\" disagrees with dtype \"", c.dtype, "\""));
    c.dtype = r.at(key).get<std::string>();
  }
  c.layers = parse_subq_section(r, c.num_hidden_layers, source);
  validate_llama_config(c, source);
  return c;
}

LlamaConfig load_llama_config(const std::filesystem::path& path) {
  return parse_llama_config(read_file(path), path.string());
}

bool all_layers_softmax(const LlamaConfig& c) {
  return std::all_of(c.layers.begin(), c.layers.end(), [](const LayerSpec& s) {
    return s.mechanism == "softmax" && (s.options.is_null() || s.options.empty());
  });
}

std::string llama_config_to_json(const LlamaConfig& c) {
  validate_llama_config(c, "config");
  json j = c.fields;
  // Fields transformers needs to recognise the file, when a config was built in code.
  if (!j.contains("model_type")) j["model_type"] = c.model_type;
  if (!j.contains("architectures")) {
    const std::string& t = c.model_type;
    const char* arch = t == "mistral" ? "MistralForCausalLM"
                       : t == "qwen2" ? "Qwen2ForCausalLM"
                       : t == "qwen3" ? "Qwen3ForCausalLM"
                                      : "LlamaForCausalLM";
    j["architectures"] = json::array({arch});
  }
  if (!j.contains("hidden_act")) j["hidden_act"] = "silu";

  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["intermediate_size"] = c.intermediate_size;
  j["vocab_size"] = c.vocab_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  // RoPE where the file had it: transformers 5's rope_parameters, or the older rope_theta.
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    j["rope_parameters"]["rope_theta"] = c.rope_theta;
    if (j.contains("rope_theta")) j["rope_theta"] = c.rope_theta;
  } else {
    j["rope_theta"] = c.rope_theta;
  }
  j["bos_token_id"] = c.bos_token_id ? json(*c.bos_token_id) : json(nullptr);
  const bool eos_was_list = j.contains("eos_token_id") && j["eos_token_id"].is_array();
  if (c.eos_token_ids.empty()) {
    j["eos_token_id"] = nullptr;
  } else if (c.eos_token_ids.size() == 1 && !eos_was_list) {
    j["eos_token_id"] = c.eos_token_ids[0];
  } else {
    j["eos_token_id"] = c.eos_token_ids;
  }
  // transformers 5 reads and writes "dtype"; keep "torch_dtype" for files that only had that.
  if (c.dtype.empty()) {
    j.erase("dtype");
    j.erase("torch_dtype");
  } else {
    const bool had_torch_dtype = j.contains("torch_dtype");
    if (had_torch_dtype) j["torch_dtype"] = c.dtype;
    if (!had_torch_dtype || j.contains("dtype")) j["dtype"] = c.dtype;
  }
  if (all_layers_softmax(c)) {
    j.erase("subq");
  } else {
    j["subq"] = subq_section(c);
  }
  return j.dump(2) + "\n";
}

void save_llama_config(const std::filesystem::path& path, const LlamaConfig& config) {
  write_file_atomically(path, llama_config_to_json(config));
}

}  // namespace subq::formats
