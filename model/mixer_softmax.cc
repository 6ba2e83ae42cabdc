// Softmax attention: LLaMA's self_attn (q, k, v, o projections, RoPE, GQA) over subq's exact
// attention op. Training runs flash_attention (differentiable); with a cache, each chunk of T
// tokens is appended to the KV cache and attends to it through flash_attention_decode, so a
// chunked prefill and token-by-token decode compute exactly what one forward does.
#include <torch/torch.h>

#include "model/mixer_impls.h"
#include "model/token_decode.h"
#include "subq/error.h"
#include "subq/flash.h"
#include "torch/ops.h"

namespace subq::model {
namespace {

struct KvCache : LayerCache {
  at::Tensor k, v;     // [B, C, Hkv, hd]
  at::Tensor seqlens;  // int32 [B]: tokens seen (a ring keeps only the last C)
  int64_t seen = 0;
  bool ring = false;
  size_t nbytes() const override { return k.nbytes() + v.nbytes() + seqlens.nbytes(); }
};

class SoftmaxMixer : public MixerImpl {
 public:
  SoftmaxMixer(const MixerSpec& spec, const LlamaConfig& c)
      : MixerImpl(spec),
        H_(c.num_attention_heads),
        hd_(c.head_dim),
        window_(spec.window > 0 ? spec.window : spec.config_window) {
    attn_ = register_attention_projections(*this, spec, c);
  }

  at::Tensor forward(const at::Tensor& x, const MixerContext& ctx, LayerCache* cache) override {
    const int64_t B = x.size(0), T = x.size(1);
    const auto qkv = attn_.project(x);
    const at::Tensor q = apply_rope(qkv.q, *ctx.rope);
    const at::Tensor k = apply_rope(qkv.k, *ctx.rope);
    const at::Tensor& v = qkv.v;
    // A sliding window of w keys, self included: (w - 1, 0) in FlashAttention's terms.
    const int64_t left = window_ > 0 ? window_ - 1 : -1;
    at::Tensor out;
    if (!cache) {
      out = std::get<0>(torch_ops::flash_attention(q.contiguous(), k.contiguous(), v.contiguous(),
                                                   std::nullopt, true, left, left >= 0 ? 0 : -1));
    } else {
      auto& kv = static_cast<KvCache&>(*cache);
      SUBQ_CHECK(kv.ring || kv.seen + T <= kv.k.size(1), "softmax attention: the KV cache holds ",
                 kv.k.size(1), " tokens; ", kv.seen, " + ", T, " do not fit (raise the capacity)");
      SUBQ_CHECK(!kv.ring || left + T <= kv.k.size(1), "softmax attention: a chunk of ", T,
                 " tokens does not fit the ring of ", kv.k.size(1), " with a window of ", window_);
      if (T > 1 && !kv.ring) {
        // A prefill chunk: append it, then run the forward kernel over the cache so far
        // (causal is bottom-right, so the chunk's queries see exactly the right keys). The
        // forward's tiles beat the decode kernel's, which is built for one or a few queries.
        kv.k.narrow(1, kv.seen, T).copy_(k);
        kv.v.narrow(1, kv.seen, T).copy_(v);
        out = std::get<0>(torch_ops::flash_attention(q.contiguous(), kv.k.narrow(1, 0, kv.seen + T),
                                                     kv.v.narrow(1, 0, kv.seen + T), std::nullopt,
                                                     true, left, left >= 0 ? 0 : -1));
      } else {
        out = std::get<0>(torch_ops::flash_attention_decode(
            q.contiguous(), kv.k, kv.v, kv.seqlens, k.contiguous(), v.contiguous(), std::nullopt,
            true, left, left >= 0 ? 0 : -1, 0., std::nullopt, kv.ring, 0));
      }
      kv.seqlens += T;
      kv.seen += T;
    }
    return attn_.o_proj(out.reshape({B, T, H_ * hd_}));
  }

  bool token_decode_ready(const LayerCache& cache) const override {
    const auto& kv = static_cast<const KvCache&>(cache);
    return attn_.token_ready() && kv.k.size(0) == 1 && kv.k.is_contiguous() && kv.v.is_contiguous();
  }

  // forward's decode step on raw rows: q, k, v; RoPE; the token joins the cache and attends to
  // it (flash_attention_decode, the same options); o_proj.
  void decode_token(const float* x, float* y, TokenScratch& s, LayerCache& cache) override {
    auto& kv = static_cast<KvCache&>(cache);
    SUBQ_CHECK(kv.ring || kv.seen + 1 <= kv.k.size(1), "softmax attention: the KV cache holds ",
               kv.k.size(1), " tokens; ", kv.seen, " + 1 do not fit (raise the capacity)");
    const int64_t Hkv = attn_.Hkv, nq = H_ * hd_, nkv = Hkv * hd_;
    s.qkv.resize(static_cast<size_t>(nq + 2 * nkv));
    s.q.resize(static_cast<size_t>(nq));
    s.k.resize(static_cast<size_t>(nkv));
    s.attn.resize(static_cast<size_t>(nq));
    s.lse.resize(static_cast<size_t>(H_));
    attn_.project_token(x, s.qkv.data());
    const float* cos = s.cos.data();  // [hd]
    const float* sin = s.sin.data();
    for (int64_t h = 0; h < H_; ++h)
      rope_row(s.qkv.data() + h * hd_, cos, sin, hd_, s.q.data() + h * hd_);
    for (int64_t h = 0; h < Hkv; ++h)
      rope_row(s.qkv.data() + nq + h * hd_, cos, sin, hd_, s.k.data() + h * hd_);
    const int64_t left = window_ > 0 ? window_ - 1 : -1;
    FlashDecodeOptions opt;
    opt.causal = true;
    opt.window_left = left;
    opt.window_right = left >= 0 ? 0 : -1;
    opt.ring_buffer = kv.ring;
    const int64_t C = kv.k.size(1);
    flash_attention_decode(TensorView(s.q.data(), DType::kF32, {1, 1, H_, hd_}),
                           TensorView(kv.k.data_ptr(), DType::kF32, {1, C, Hkv, hd_}),
                           TensorView(kv.v.data_ptr(), DType::kF32, {1, C, Hkv, hd_}),
                           TensorView(kv.seqlens.data_ptr(), DType::kI32, {1}),
                           TensorView(s.k.data(), DType::kF32, {1, 1, Hkv, hd_}),
                           TensorView(s.qkv.data() + nq + nkv, DType::kF32, {1, 1, Hkv, hd_}),
                           TensorView(s.attn.data(), DType::kF32, {1, 1, H_, hd_}),
                           TensorView(s.lse.data(), DType::kF32, {1, H_, 1}), opt);
    kv.seqlens.data_ptr<int32_t>()[0] += 1;
    kv.seen += 1;
    project_row(*attn_.o_proj, s.attn.data(), y);
  }

  std::unique_ptr<LayerCache> make_cache(int64_t batch, int64_t capacity,
                                         int64_t max_chunk) const override {
    auto c = std::make_unique<KvCache>();
    c->ring = window_ > 0;
    // A ring must hold the window before the chunk plus the chunk itself.
    const int64_t slots = c->ring ? std::min(capacity, window_ - 1 + max_chunk) : capacity;
    c->k = torch::zeros({batch, slots, attn_.Hkv, hd_});
    c->v = torch::zeros({batch, slots, attn_.Hkv, hd_});
    c->seqlens = torch::zeros({batch}, torch::kInt32);
    if (c->ring && slots == capacity) c->ring = false;  // the whole context fits: no wrap
    return c;
  }

  CacheCost cache_cost(int64_t max_chunk) const override {
    const size_t per_token = 2 * static_cast<size_t>(attn_.Hkv * hd_) * sizeof(float);
    if (window_ > 0) return {0, per_token * static_cast<size_t>(window_ - 1 + max_chunk)};
    return {per_token, 0};
  }

  AttentionProjections attn_;

 private:
  int64_t H_, hd_;
  int64_t window_;  // 0: full causal; w: a sliding window of w keys
};

}  // namespace

std::shared_ptr<MixerImpl> make_softmax_mixer(const MixerSpec& spec, const LlamaConfig& config) {
  return std::make_shared<SoftmaxMixer>(spec, config);
}

}  // namespace subq::model
