#include "model/mechanism.h"

#include "formats/json_options.h"
#include "formats/strict_json.h"

#include <algorithm>
#include <set>

#include "subq/conv.h"
#include "subq/error.h"

namespace subq::model {
namespace {

using formats::json_excerpt;
using nlohmann::json;
using OptionReader = formats::JsonOptions;

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

LoraSpec parse_lora(const json& j, const std::string& where) {
  LoraSpec lora;
  json rest = j;  // "targets" is a list, read apart from the scalar options
  rest.erase("targets");
  OptionReader r(rest, where + ": lora");
  lora.r = r.integer("r", 8, 1, kMaxLoraRank);
  lora.alpha = r.number("alpha", 16);
  r.forbid_rest("mechanism lora");
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
  r.forbid_rest("mechanism " + m);
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
