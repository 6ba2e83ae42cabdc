// Constructors of the mixers (model/mixers.h), one per file: mixer_softmax.cc,
// mixer_linear.cc (linear and hybrid), mixer_conv.cc, mixer_mamba2.cc.
#pragma once

#include <memory>

#include "model/mixers.h"

namespace subq::model {

std::shared_ptr<MixerImpl> make_softmax_mixer(const MixerSpec& spec, const LlamaConfig& config);
std::shared_ptr<MixerImpl> make_linear_mixer(const MixerSpec& spec, const LlamaConfig& config);
std::shared_ptr<MixerImpl> make_hybrid_mixer(const MixerSpec& spec, const LlamaConfig& config);
std::shared_ptr<MixerImpl> make_conv_mixer(const MixerSpec& spec, const LlamaConfig& config);
std::shared_ptr<MixerImpl> make_mamba2_mixer(const MixerSpec& spec, const LlamaConfig& config);

// LoRA on the mixer's projections named in spec.lora.targets (q_proj, k_proj, v_proj, o_proj).
void attach_mixer_lora(const MixerSpec& spec,
                       std::initializer_list<std::pair<const char*, Projection*>> projections);

// The teacher's attention projections, kept by every mixer that starts from them (softmax,
// linear, hybrid): q_proj [H * hd, hidden], k_proj and v_proj [Hkv * hd, hidden],
// o_proj [hidden, H * hd], with the biases of the config's family (Qwen2's q, k, v; LLaMA's
// attention_bias), and Qwen3's q_norm and k_norm [hd]; registered on `owner` under the
// transformers names, with LoRA as the spec says.
struct AttentionProjections {
  Projection q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  RMSNorm q_norm{nullptr}, k_norm{nullptr};  // null unless config.qk_norm
  int64_t H = 0, Hkv = 0, hd = 0;
  // x [B, T, hidden] -> q [B, T, H, hd], k and v [B, T, Hkv, hd], before RoPE (q and k through
  // their norms when there are any, as Qwen3 does).
  struct Qkv {
    at::Tensor q, k, v;
  };
  Qkv project(const at::Tensor& x);
  // The token path (model/token_decode.h): whether it can run these projections (no LoRA), and
  // qkv [(H + 2 Hkv) hd] = q, k, v of one row x [hidden], as project computes them.
  bool token_ready() const;
  void project_token(const float* x, float* qkv);
};
AttentionProjections register_attention_projections(torch::nn::Module& owner, const MixerSpec& spec,
                                                    const LlamaConfig& config);

// [B, T, Hkv, d] -> [B, T, Hkv * groups, d]: kv head j serves query heads j * groups ... (GQA).
at::Tensor repeat_kv(const at::Tensor& x, int64_t groups);

}  // namespace subq::model
