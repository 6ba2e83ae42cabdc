#include "model/mechanism.h"

#include "formats/strict_json.h"

#include <algorithm>
#include <set>

#include "subq/conv.h"
#include "subq/error.h"

namespace subq::model {
namespace {

using formats::json_excerpt;
using nlohmann::json;

// Upper bounds of the size options. Each is far above what a real layer uses (hedgehog and
// taylor maps are a few hundred wide, Mamba-2 states 64 to 256, LoRA ranks 4 to 64).
constexpr int64_t kMaxWindow = int64_t{1} << 30;
constexpr int64_t kMaxFeatureDim = 4096;
constexpr int64_t kMaxChunk = 1024;
constexpr int64_t kMaxExpand = 8;
constexpr int64_t kMaxStateSize = 1024;
constexpr int64_t kMaxLoraRank = 1024;

const std::vector<std::string> kLoraTargets = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                               "gate_proj", "up_proj", "down_proj"};

// Reads options of one entry, remembering which were read so that leftovers are reported.
class OptionReader {
 public:
  OptionReader(const json& options, std::string where) : o_(options), where_(std::move(where)) {}

  // Every size option is bounded: with the checkpoint's own tensors bounding the model's
  // dimensions, these bounds keep what a mixer allocates from its options a small multiple of
  // the model (a 1 KB config cannot ask for a terabyte).
  int64_t integer(const char* key, int64_t def, int64_t min, int64_t max) {
    if (!take(key)) return def;
    const json& v = o_.at(key);
    SUBQ_CHECK(v.is_number_integer(), where_, ": ", key, ": expected an integer, got ",
               json_excerpt(v));
    SUBQ_CHECK(!v.is_number_unsigned() || v.get<uint64_t>() <= static_cast<uint64_t>(max), where_,
               ": ", key, ": expected an integer in [", min, ", ", max, "], got ", json_excerpt(v));
    const int64_t x = v.get<int64_t>();
    SUBQ_CHECK(x >= min && x <= max, where_, ": ", key, ": expected an integer in [", min, ", ",
               max, "], got ", x);
    return x;
  }
  double number(const char* key, double def) {
    if (!take(key)) return def;
    const json& v = o_.at(key);
    SUBQ_CHECK(v.is_number(), where_, ": ", key, ": expected a number, got ", v.dump());
    return v.get<double>();
  }
  bool boolean(const char* key, bool def) {
    if (!take(key)) return def;
    const json& v = o_.at(key);
    SUBQ_CHECK(v.is_boolean(), where_, ": ", key, ": expected true or false, got ", v.dump());
    return v.get<bool>();
  }
  std::string choice(const char* key, const std::string& def,
                     const std::vector<std::string>& allowed) {
    if (!take(key)) return def;
    const json& v = o_.at(key);
    const std::string s = v.is_string() ? v.get<std::string>() : v.dump();
    if (!v.is_string() || std::find(allowed.begin(), allowed.end(), s) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      throw Error(detail::concat(where_, ": ", key, ": expected one of ", list, ", got ", s));
    }
    return s;
  }
  const json* object(const char* key) {
    if (!take(key)) return nullptr;
    const json& v = o_.at(key);
    SUBQ_CHECK(v.is_object(), where_, ": ", key, ": expected an object, got ", v.dump());
    return &v;
  }
  void forbid_rest(const std::string& mechanism) const {
    for (const auto& [k, v] : o_.items())
      SUBQ_CHECK(read_.count(k), where_, ": unknown option \"", k, "\" for mechanism ", mechanism);
  }

 private:
  bool take(const char* key) {
    read_.insert(key);
    return o_.contains(key);
  }
  const json& o_;
  std::string where_;
  std::set<std::string> read_;
};

LoraSpec parse_lora(const json& j, const std::string& where) {
  LoraSpec lora;
  json rest = j;  // "targets" is a list, read apart from the scalar options
  rest.erase("targets");
  OptionReader r(rest, where + ": lora");
  lora.r = r.integer("r", 8, 1, kMaxLoraRank);
  lora.alpha = r.number("alpha", 16);
  r.forbid_rest("lora");
  if (!j.contains("targets")) {
    lora.targets = {"q_proj", "k_proj", "v_proj", "o_proj"};  // LoLCATs' stage-2 choice
    return lora;
  }
  const json& t = j.at("targets");
  SUBQ_CHECK(t.is_array() && !t.empty(), where, ": lora: targets: expected a non-empty list, got ",
             t.dump());
  for (const auto& name : t) {
    const std::string s = name.is_string() ? name.get<std::string>() : name.dump();
    SUBQ_CHECK(std::find(kLoraTargets.begin(), kLoraTargets.end(), s) != kLoraTargets.end(), where,
               ": lora: targets: expected q_proj, k_proj, v_proj, o_proj, gate_proj, ",
               "up_proj or down_proj, got ", s);
    lora.targets.push_back(s);
  }
  return lora;
}

}  // namespace

std::string mixer_kind_name(MixerKind k) {
  switch (k) {
    case MixerKind::kSoftmax:
      return "softmax";
    case MixerKind::kLinear:
      return "linear";
    case MixerKind::kHybrid:
      return "hybrid";
    case MixerKind::kShortConv:
      return "short_conv";
    case MixerKind::kMamba2:
      return "mamba2";
  }
  return "?";
}

MixerSpec parse_mixer_spec(const LayerSpec& layer, const LlamaConfig& config,
                           const std::string& where) {
  MixerSpec s;
  const std::string& m = layer.mechanism;
  OptionReader r(layer.options, where);
  const int64_t head_dim = config.head_dim;
  if (m == "softmax") {
    s.kind = MixerKind::kSoftmax;
    s.window = r.integer("window", 0, 0, kMaxWindow);
  } else if (m == "linear" || m == "hybrid") {
    s.kind = m == "linear" ? MixerKind::kLinear : MixerKind::kHybrid;
    // Performer (a sequence-wide key stabiliser) and cosformer (positions relative to the call)
    // depend on the whole call, so prefill + decode would not equal one forward.
    s.feature_map = r.choice("feature_map", "hedgehog",
                             {"identity", "elu1", "relu", "t2r", "hedgehog", "taylor", "dpfp"});
    const int64_t def_fdim =
        s.feature_map == "hedgehog" ? std::max<int64_t>(head_dim / 2, 1) : head_dim;
    s.feature_dim = r.integer("feature_dim", def_fdim, 1, kMaxFeatureDim);
    s.rope = r.boolean("rope", true);
    if (s.kind == MixerKind::kLinear) {
      s.gate = r.choice("gate", "none", {"none", "scalar", "per_dim"});
      s.normalize = r.boolean("normalize", s.gate == "none");
    } else {
      s.gate = r.choice("gate", "none", {"none", "scalar"});
      s.window = r.integer("window", 64, 1, kMaxWindow);
      s.normalize = true;
    }
    s.chunk_size = r.integer("chunk_size", 64, 16, kMaxChunk);
  } else if (m == "short_conv") {
    s.kind = MixerKind::kShortConv;
    s.conv_width = r.integer("conv_width", 4, 2, kMaxConvWidth);
  } else if (m == "mamba2") {
    s.kind = MixerKind::kMamba2;
    s.expand = r.integer("expand", 2, 1, kMaxExpand);
    const int64_t d_inner = s.expand * config.hidden_size;
    s.mamba_head_dim = r.integer("head_dim", std::min<int64_t>(64, d_inner), 1, d_inner);
    SUBQ_CHECK(d_inner % s.mamba_head_dim == 0, where, ": head_dim: expected a divisor of ",
               "expand * hidden_size = ", d_inner, ", got ", s.mamba_head_dim);
    s.state_size = r.integer("state_size", 64, 1, kMaxStateSize);
    s.n_groups = r.integer("n_groups", 1, 1, d_inner);
    SUBQ_CHECK((d_inner / s.mamba_head_dim) % s.n_groups == 0, where,
               ": n_groups: expected a divisor of the head count ", d_inner / s.mamba_head_dim,
               ", got ", s.n_groups);
    s.conv_width = r.integer("conv_width", 4, 2, kMaxConvWidth);
    s.chunk_size = r.integer("chunk_size", 64, 16, kMaxChunk);
  } else {
    throw Error(detail::concat(where, ": mechanism: expected softmax, linear, hybrid, ",
                               "short_conv or mamba2, got ", m));
  }
  if (s.kind == MixerKind::kLinear || s.kind == MixerKind::kHybrid || s.kind == MixerKind::kMamba2)
    SUBQ_CHECK((s.chunk_size & (s.chunk_size - 1)) == 0 && s.chunk_size <= 256, where,
               ": chunk_size: expected a power of two from 16 to 256, got ", s.chunk_size);
  if (const json* lora = r.object("lora")) s.lora = parse_lora(*lora, where);
  r.forbid_rest(m);
  return s;
}

LayerSpec to_layer_spec(const MixerSpec& s) {
  LayerSpec l;
  l.mechanism = mixer_kind_name(s.kind);
  json o = json::object();
  switch (s.kind) {
    case MixerKind::kSoftmax:
      if (s.window > 0) o["window"] = s.window;
      break;
    case MixerKind::kLinear:
    case MixerKind::kHybrid:
      o["feature_map"] = s.feature_map;
      o["feature_dim"] = s.feature_dim;
      o["rope"] = s.rope;
      o["gate"] = s.gate;
      if (s.kind == MixerKind::kLinear) o["normalize"] = s.normalize;
      if (s.kind == MixerKind::kHybrid) o["window"] = s.window;
      o["chunk_size"] = s.chunk_size;
      break;
    case MixerKind::kShortConv:
      o["conv_width"] = s.conv_width;
      break;
    case MixerKind::kMamba2:
      o["expand"] = s.expand;
      o["head_dim"] = s.mamba_head_dim;
      o["state_size"] = s.state_size;
      o["n_groups"] = s.n_groups;
      o["conv_width"] = s.conv_width;
      o["chunk_size"] = s.chunk_size;
      break;
  }
  if (s.lora.r > 0)
    o["lora"] = json{{"r", s.lora.r}, {"alpha", s.lora.alpha}, {"targets", s.lora.targets}};
  l.options = o;
  return l;
}

}  // namespace subq::model
