#include "model/mixers.h"

#include <algorithm>

#include "model/mixer_impls.h"
#include "model/token_decode.h"
#include "subq/error.h"

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

void MixerImpl::decode_token(const float*, float*, TokenScratch&, LayerCache&) {
  SUBQ_CHECK(false, "decode_token: this mixer has no token path (token_decode_ready is false)");
}

AttentionProjections register_attention_projections(torch::nn::Module& owner, const MixerSpec& spec,
                                                    const LlamaConfig& c) {
  const int64_t H = c.num_attention_heads, Hkv = c.num_key_value_heads, hd = c.head_dim;
  AttentionProjections p;
  p.H = H;
  p.Hkv = Hkv;
  p.hd = hd;
  const bool qkv_bias = c.attention_qkv_bias;
  p.q_proj = owner.register_module("q_proj", Projection(c.hidden_size, H * hd, qkv_bias));
  p.k_proj = owner.register_module("k_proj", Projection(c.hidden_size, Hkv * hd, qkv_bias));
  p.v_proj = owner.register_module("v_proj", Projection(c.hidden_size, Hkv * hd, qkv_bias));
  p.o_proj = owner.register_module("o_proj", Projection(H * hd, c.hidden_size, c.attention_o_bias));
  if (c.qk_norm) {
    p.q_norm = owner.register_module("q_norm", RMSNorm(hd, c.rms_norm_eps));
    p.k_norm = owner.register_module("k_norm", RMSNorm(hd, c.rms_norm_eps));
  }
  attach_mixer_lora(
      spec,
      {{"q_proj", &p.q_proj}, {"k_proj", &p.k_proj}, {"v_proj", &p.v_proj}, {"o_proj", &p.o_proj}});
  return p;
}

AttentionProjections::Qkv AttentionProjections::project(const at::Tensor& x) {
  const int64_t B = x.size(0), T = x.size(1);
  // A decode step with q, k and v back to back in memory: one matvec over the three.
  const at::Tensor qkv =
      decode_rows(x, q_proj->weight)
          ? adjacent_rows({q_proj.ptr().get(), k_proj.ptr().get(), v_proj.ptr().get()})
          : at::Tensor();
  if (qkv.defined()) {
    const at::Tensor y = linear_any(x, qkv);  // [B, T, (H + 2 Hkv) hd]
    Qkv r{y.narrow(-1, 0, H * hd).view({B, T, H, hd}),
          y.narrow(-1, H * hd, Hkv * hd).view({B, T, Hkv, hd}),
          y.narrow(-1, (H + Hkv) * hd, Hkv * hd).view({B, T, Hkv, hd})};
    if (q_norm) {
      r.q = q_norm(r.q);
      r.k = k_norm(r.k);
    }
    return r;
  }
  Qkv r{q_proj(x).view({B, T, H, hd}), k_proj(x).view({B, T, Hkv, hd}),
        v_proj(x).view({B, T, Hkv, hd})};
  if (q_norm) {
    r.q = q_norm(r.q);
    r.k = k_norm(r.k);
  }
  return r;
}

at::Tensor repeat_kv(const at::Tensor& x, int64_t groups) {
  if (groups == 1) return x;
  return x.repeat_interleave(groups, /*dim=*/2);
}

bool AttentionProjections::token_ready() const {
  for (const ProjectionImpl* p : {q_proj.get(), k_proj.get(), v_proj.get(), o_proj.get()})
    if (p->has_lora() || !p->weight.is_contiguous()) return false;
  return true;
}

void AttentionProjections::project_token(const float* x, float* qkv) {
  const int64_t nq = H * hd, nkv = Hkv * hd;
  // One matvec over q, k and v when the arena lays them back to back (no biases), as project.
  if (adjacent_row_count({q_proj.get(), k_proj.get(), v_proj.get()}) == nq + 2 * nkv) {
    matvec_row(q_proj->weight, nq + 2 * nkv, x, qkv);
  } else {
    project_row(*q_proj, x, qkv);
    project_row(*k_proj, x, qkv + nq);
    project_row(*v_proj, x, qkv + nq + nkv);
  }
  if (q_norm) {  // Qwen3: each head of q and k through its norm (in place: the row is read first)
    for (int64_t h = 0; h < H; ++h)
      rms_norm_row(qkv + h * hd, q_norm->weight.data_ptr<float>(), hd, q_norm->eps, qkv + h * hd);
    for (int64_t h = 0; h < Hkv; ++h)
      rms_norm_row(qkv + nq + h * hd, k_norm->weight.data_ptr<float>(), hd, k_norm->eps,
                   qkv + nq + h * hd);
  }
}

}  // namespace subq::model
