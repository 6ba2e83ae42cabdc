// The decoder: LLaMA's architecture with a token mixer chosen per layer (model/mixers.h).
//
//   h = embed_tokens(ids)                                       ids [B, T] int64
//   per layer: h += self_attn(input_layernorm(h)); h += mlp(post_attention_layernorm(h))
//   logits = lm_head(norm(h))                                   [B, T, vocab] f32
//
// Parameter names are LlamaForCausalLM's (model.layers.{i}.self_attn.q_proj.weight, ...), so a
// transformers checkpoint loads as is; mixers other than softmax add their own names under
// self_attn. The model computes in float32 whatever dtype its checkpoint stores.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/types.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/hf_config.h"
#include "model/mechanism.h"
#include "model/mixers.h"
#include "model/modules.h"

namespace subq::model {

using formats::CheckpointTensors;
using formats::ExpectedTensors;

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const MixerSpec& spec, const LlamaConfig& config);
  at::Tensor forward(const at::Tensor& h, const MixerContext& ctx, LayerCache* cache);
  // The token path (model/token_decode.h): forward of one token of one sequence on s.h, in
  // place, when token_decode_ready.
  bool token_decode_ready(const LayerCache& cache) const;
  void decode_token(TokenScratch& s, LayerCache& cache);
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  std::shared_ptr<MixerImpl> self_attn;
  Mlp mlp{nullptr};
};
TORCH_MODULE(DecoderLayer);

// The decode caches of every layer, for B sequences, and how many tokens they have seen.
struct ModelCache {
  std::vector<std::unique_ptr<LayerCache>> layers;
  int64_t batch = 0;
  int64_t capacity = 0;   // longest context the KV caches hold
  int64_t max_chunk = 0;  // longest chunk a forward may feed
  int64_t seen = 0;
  std::shared_ptr<TokenScratch> token_scratch;  // the token path's rows (model/token_decode.h)
  size_t nbytes() const;
};

// Cache bytes per sequence: growing (softmax layers' KV) and fixed (everything else).
struct ModelCacheCost {
  size_t bytes_per_token = 0;
  size_t fixed_bytes = 0;
};

class DecoderModelImpl : public torch::nn::Module {
 public:
  // A model of `config` (its `subq` layers pick the mixers) with freshly initialised weights.
  explicit DecoderModelImpl(const LlamaConfig& config);

  // ids [B, T] int64 -> logits [B, T, vocab] ([B, 1, vocab] of the last position with
  // last_logits_only). With a cache, ids continue the cached sequences (T <= cache.max_chunk)
  // and the cache advances by T.
  at::Tensor forward(const at::Tensor& ids, ModelCache* cache = nullptr,
                     bool last_logits_only = false);

  // ids [B, T] -> logits [N, vocab] of N of its positions (indices into the B * T flattened
  // ones), no cache: a loss on a few labelled positions (MQAR labels one in 16) skips the
  // vocabulary projection of the others.
  at::Tensor forward_at(const at::Tensor& ids, const at::Tensor& positions);

  ModelCache new_cache(int64_t batch, int64_t capacity, int64_t max_chunk = 512) const;
  ModelCacheCost cache_cost(int64_t max_chunk = 512) const;

  const LlamaConfig& config() const { return config_; }
  const std::vector<MixerSpec>& mixer_specs() const { return specs_; }
  int64_t num_parameters() const;

  // The config as it would be saved: every layer's mechanism with all its options.
  LlamaConfig config_to_save() const;
  // name -> shape of every tensor a checkpoint of this model holds (lm_head.weight is optional
  // when the embeddings are tied).
  ExpectedTensors expected_tensors() const;

  // Keeps the weight matrices (embeddings, projections) in `dtype`: f32, or bf16 for inference,
  // read as bf16 and computed in f32 (linear_any). Norms, gates and LoRA stay f32.
  void set_weights_dtype(at::ScalarType dtype);

  // Parameters that can be frozen or trained as a group (see set_trainable).
  //   "embeddings"  embed_tokens and lm_head
  //   "norms"       every RMSNorm
  //   "mlp"         the SwiGLU MLPs (without LoRA)
  //   "attention"   the teacher's attention projections (q, k, v, o) of every mixer
  //   "mixer_new"   what a student adds: feature maps, gates, window factors, convs, Mamba-2
  //   "lora"        LoRA adapters
  static std::string parameter_group(const std::string& name);
  // requires_grad = trainable for every parameter of the named group; throws on an unknown one.
  void set_trainable(const std::string& group, bool trainable);

  // Whether the token path can decode ids [1, 1] with this cache (every layer, the embeddings
  // and the lm_head support it), and that step: the logits [1, 1, vocab] of token `id`.
  bool token_decode_ready(const ModelCache& cache) const;
  at::Tensor decode_token(int64_t id, ModelCache& cache);
  // forward takes the token path where it can unless this is false (or SUBQ_TOKEN_DECODE=0).
  bool use_token_decode = true;

 private:
  // The last layer's output [B, T, hidden] (before the final norm), advancing the cache.
  at::Tensor hidden_states(const at::Tensor& ids, ModelCache* cache);
  // Final norm and vocabulary projection of hidden states [..., hidden].
  at::Tensor logits_of(const at::Tensor& h);
  // decode_token once token_decode_ready(cache) is known to hold.
  at::Tensor run_token_path(int64_t id, ModelCache& cache);

 public:
  torch::nn::Module* model_body = nullptr;
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
  Projection lm_head{nullptr};  // null when tied: the logits use embed_tokens' weight

 private:
  LlamaConfig config_;
  std::vector<MixerSpec> specs_;
};
TORCH_MODULE(DecoderModel);

// Loads a checkpoint directory (config.json + model.safetensors or shards), validating the
// files and every tensor's name and shape against the model its config describes.
DecoderModel load_model(const std::filesystem::path& dir);
// Copies the checkpoint's tensors into the model's parameters (after validating them).
void load_weights(DecoderModelImpl& model, const CheckpointTensors& checkpoint);
// Writes config.json and the weights (atomically), in `dtype` (f32, bf16 or f16), sharded when
// max_shard_bytes > 0.
void save_model(const DecoderModelImpl& model, const std::filesystem::path& dir,
                DType dtype = DType::kF32, uint64_t max_shard_bytes = 0);

}  // namespace subq::model
