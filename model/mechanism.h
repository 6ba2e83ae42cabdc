// What each layer's token mixer is: the options of the `subq` section of config.json, parsed and
// validated (model/hf_config.h keeps them as raw JSON; this is where they get a meaning).
//
// A layer entry is {"mechanism": NAME, ...options}. Unknown options are errors, so a typo in a
// config never silently falls back to a default. Defaults are filled in on save, so a saved
// student records every option it was built with and reloads exactly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/hf_config.h"

namespace subq::model {

// The config types come from formats/ (torch-free); the model uses them unqualified.
using formats::LayerSpec;
using formats::LlamaConfig;

enum class MixerKind { kSoftmax, kLinear, kHybrid, kShortConv, kMamba2 };

// LoRA on projections of the layer (q_proj, k_proj, v_proj, o_proj, and the MLP's gate_proj,
// up_proj, down_proj): W x + (alpha / r) B A x, A [r, in], B [out, r], B initialised to zero.
struct LoraSpec {
  int64_t r = 0;  // 0: none
  double alpha = 16;
  std::vector<std::string> targets;
};

struct MixerSpec {
  MixerKind kind = MixerKind::kSoftmax;
  // softmax: 0 = full causal attention; w > 0 = a sliding window of w keys (self included) with a
  // ring-buffer cache of w tokens. hybrid: the window of its softmax part.
  int64_t window = 0;
  // softmax: the window config.json gives this layer (Mistral's sliding_window, Qwen's
  // layer_types), used when `window` is 0. Not part of the subq section: the teacher's own.
  int64_t config_window = 0;
  // linear, hybrid: the feature map applied to q and k (after RoPE, as LoLCATs), its size, and
  // whether RoPE is applied at all.
  std::string feature_map = "hedgehog";
  int64_t feature_dim = 0;  // hedgehog / t2r d'; 0 = head_dim / 2 (hedgehog), head_dim (t2r)
  bool rope = true;
  // linear: "none", "scalar" (one decay per head and token, simple_gla) or "per_dim" (one per
  // feature dim, gla); hybrid: "none" or "scalar". Gates are logsigmoid(proj(x)) / 16, GLA's.
  std::string gate = "none";
  bool normalize = true;  // linear: divide by q . z (the classic linear attention)
  int64_t chunk_size = 64;
  // short_conv: causal depthwise width; mamba2: its conv's width.
  int64_t conv_width = 4;
  // mamba2 (Mamba-2's block): d_inner = expand * hidden, heads of mamba_head_dim, state size N,
  // n_groups B/C groups.
  int64_t expand = 2;
  int64_t mamba_head_dim = 0;  // 0: 64, or d_inner when smaller
  int64_t state_size = 64;
  int64_t n_groups = 1;
  LoraSpec lora;
};

std::string mixer_kind_name(MixerKind k);

// Parses one layer entry; `where` names it in errors ("config.json: subq.layers[3]").
MixerSpec parse_mixer_spec(const LayerSpec& layer, const LlamaConfig& config,
                           const std::string& where);
// The entry with every option written out (what a saved config.json holds).
LayerSpec to_layer_spec(const MixerSpec& spec);

}  // namespace subq::model
