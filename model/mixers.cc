#include "model/mixers.h"

#include <algorithm>

#include "model/mixer_impls.h"

namespace subq::model {

std::shared_ptr<MixerImpl> make_mixer(const MixerSpec& spec, const LlamaConfig& config) {
  switch (spec.kind) {
    case MixerKind::kSoftmax:
      return make_softmax_mixer(spec, config);
    case MixerKind::kLinear:
      return make_linear_mixer(spec, config);
    case MixerKind::kHybrid:
      return make_hybrid_mixer(spec, config);
    case MixerKind::kShortConv:
      return make_conv_mixer(spec, config);
    case MixerKind::kMamba2:
      return make_mamba2_mixer(spec, config);
  }
  return nullptr;
}

void attach_mixer_lora(const MixerSpec& spec,
                       std::initializer_list<std::pair<const char*, Projection*>> projections) {
  if (spec.lora.r == 0) return;
  for (const auto& [name, proj] : projections) {
    const auto& t = spec.lora.targets;
    if (std::find(t.begin(), t.end(), name) != t.end())
      (*proj)->attach_lora(spec.lora.r, spec.lora.alpha);
  }
}

AttentionProjections register_attention_projections(torch::nn::Module& owner, const MixerSpec& spec,
                                                    const LlamaConfig& c) {
  const int64_t H = c.num_attention_heads, Hkv = c.num_key_value_heads, hd = c.head_dim;
  AttentionProjections p;
  p.q_proj = owner.register_module("q_proj", Projection(c.hidden_size, H * hd));
  p.k_proj = owner.register_module("k_proj", Projection(c.hidden_size, Hkv * hd));
  p.v_proj = owner.register_module("v_proj", Projection(c.hidden_size, Hkv * hd));
  p.o_proj = owner.register_module("o_proj", Projection(H * hd, c.hidden_size));
  attach_mixer_lora(
      spec,
      {{"q_proj", &p.q_proj}, {"k_proj", &p.k_proj}, {"v_proj", &p.v_proj}, {"o_proj", &p.o_proj}});
  return p;
}

at::Tensor repeat_kv(const at::Tensor& x, int64_t groups) {
  if (groups == 1) return x;
  return x.repeat_interleave(groups, /*dim=*/2);
}

}  // namespace subq::model
