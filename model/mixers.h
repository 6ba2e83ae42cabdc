// Token mixers: what sits in a decoder layer between input_layernorm and the residual, in place
// of softmax attention. One class per mechanism (model/mechanism.h), each with its own
// parameters (named as LlamaForCausalLM names them where the teacher has them: q_proj, k_proj,
// v_proj, o_proj) and its own decode cache:
//
//   softmax     KV cache [B, C, Hkv, hd] (a ring of window + chunk tokens for a sliding window)
//   linear      state [B, H, F, hd] (+ normaliser z [B, H, F])          fixed size
//   hybrid      subq::HybridCache: a ring of w tokens + the linear state  fixed size
//   short_conv  the last W - 1 inputs [B, W - 1, hidden]                  fixed size
//   mamba2      conv state [B, W - 1, conv_dim] + SSM state [B, Hm, N, P]  fixed size
//
// forward(x, ctx, cache): x [B, T, hidden] -> [B, T, hidden]. Without a cache it is the training
// forward (differentiable, through subq's torch ops). With one, x is the next T tokens of the
// sequences the cache holds (a prefill chunk, or T = 1 for decode), and the cache advances.
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>

#include "formats/hf_config.h"
#include "model/mechanism.h"
#include "model/modules.h"

namespace subq::model {

// What a forward needs besides x: the rotary table of positions [pos0, pos0 + T).
struct MixerContext {
  int64_t pos0 = 0;
  const RopeTable* rope = nullptr;
};

// A layer's decode cache; each mixer defines its own.
struct LayerCache {
  virtual ~LayerCache() = default;
  virtual size_t nbytes() const = 0;
};

// Bytes of cache per sequence: what grows with every token, and what does not.
struct CacheCost {
  size_t bytes_per_token = 0;
  size_t fixed_bytes = 0;
};

class MixerImpl : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& x, const MixerContext& ctx, LayerCache* cache) = 0;
  // A cache for `batch` sequences of up to `capacity` tokens, fed in chunks of at most
  // `max_chunk` tokens.
  virtual std::unique_ptr<LayerCache> make_cache(int64_t batch, int64_t capacity,
                                                 int64_t max_chunk) const = 0;
  virtual CacheCost cache_cost(int64_t max_chunk) const = 0;
  // The token path (model/token_decode.h): whether this mixer can decode one token of one
  // sequence on raw rows with this cache, and that step: x [hidden] -> y [hidden], the cache
  // advanced by one. Mixers that do not override them are run by the general code.
  virtual bool token_decode_ready(const LayerCache& /*cache*/) const { return false; }
  // RoPE's cos and sin rows for the token's position are in s.cos and s.sin.
  virtual void decode_token(const float* x, float* y, TokenScratch& s, LayerCache& cache);
  const MixerSpec& spec() const { return spec_; }

 protected:
  explicit MixerImpl(MixerSpec spec) : spec_(std::move(spec)) {}
  MixerSpec spec_;
};

// The mixer of `spec` for a model of `config`, with freshly initialised parameters.
std::shared_ptr<MixerImpl> make_mixer(const MixerSpec& spec, const LlamaConfig& config);

}  // namespace subq::model
