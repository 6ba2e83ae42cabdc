#include "model/decoder.h"

#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "model/token_decode.h"
#include "subq/error.h"
#include "subq/memory.h"

namespace subq::model {

DecoderLayerImpl::DecoderLayerImpl(const MixerSpec& spec, const LlamaConfig& c) {
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  self_attn = register_module("self_attn", make_mixer(spec, c));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  mlp = register_module("mlp", Mlp(c.hidden_size, c.intermediate_size, c.mlp_bias));
  for (const auto& t : spec.lora.targets) {
    if (t == "gate_proj") mlp->gate_proj->attach_lora(spec.lora.r, spec.lora.alpha);
    if (t == "up_proj") mlp->up_proj->attach_lora(spec.lora.r, spec.lora.alpha);
    if (t == "down_proj") mlp->down_proj->attach_lora(spec.lora.r, spec.lora.alpha);
  }
}

at::Tensor DecoderLayerImpl::forward(const at::Tensor& h, const MixerContext& ctx,
                                     LayerCache* cache) {
  const at::Tensor a = h + self_attn->forward(input_layernorm(h), ctx, cache);
  return a + mlp(post_attention_layernorm(a));
}

bool DecoderLayerImpl::token_decode_ready(const LayerCache& cache) const {
  return self_attn->token_decode_ready(cache) && mlp->token_decode_ready();
}

void DecoderLayerImpl::decode_token(TokenScratch& s, LayerCache& cache) {
  // forward, one row: h += self_attn(input_layernorm(h)); h += mlp(post_attention_layernorm(h)).
  const int64_t d = static_cast<int64_t>(s.h.size());
  rms_norm_row(s.h.data(), input_layernorm->weight.data_ptr<float>(), d, input_layernorm->eps,
               s.x.data());
  self_attn->decode_token(s.x.data(), s.y.data(), s, cache);
  for (int64_t i = 0; i < d; ++i) s.h[i] += s.y[i];
  rms_norm_row(s.h.data(), post_attention_layernorm->weight.data_ptr<float>(), d,
               post_attention_layernorm->eps, s.x.data());
  mlp->decode_token(s.x.data(), s.y.data(), s);
  for (int64_t i = 0; i < d; ++i) s.h[i] += s.y[i];
}

size_t ModelCache::nbytes() const {
  size_t n = 0;
  for (const auto& l : layers) n += l->nbytes();
  return n;
}

DecoderModelImpl::DecoderModelImpl(const LlamaConfig& config) : config_(config) {
  validate_llama_config(config_);
  for (size_t i = 0; i < config_.layers.size(); ++i) {
    specs_.push_back(parse_mixer_spec(config_.layers[i], config_,
                                      "config.json: subq.layers[" + std::to_string(i) + "]"));
    if (!config_.attention_windows.empty())
      specs_.back().config_window = config_.attention_windows[i];
  }
  auto body = register_module("model", std::make_shared<torch::nn::Module>());
  model_body = body.get();
  embed_tokens = body->register_module(
      "embed_tokens", torch::nn::Embedding(config_.vocab_size, config_.hidden_size));
  init_normal(embed_tokens->weight);
  layers = body->register_module("layers", torch::nn::ModuleList());
  for (const auto& spec : specs_) layers->push_back(DecoderLayer(spec, config_));
  norm = body->register_module("norm", RMSNorm(config_.hidden_size, config_.rms_norm_eps));
  if (!config_.tie_word_embeddings)
    lm_head = register_module("lm_head", Projection(config_.hidden_size, config_.vocab_size));
}

at::Tensor DecoderModelImpl::forward(const at::Tensor& ids, ModelCache* cache,
                                     bool last_logits_only) {
  SUBQ_CHECK(ids.dim() == 2 && ids.scalar_type() == torch::kInt64,
             "DecoderModel::forward: ids: expected int64 [B, T], got ", ids.sizes(), " ",
             ids.scalar_type());
  const int64_t T = ids.size(1);
  if (cache && T == 1 && ids.size(0) == 1 && !torch::GradMode::is_enabled() && use_token_decode &&
      token_decode_enabled() && token_decode_ready(*cache))
    return run_token_path(ids.contiguous().data_ptr<int64_t>()[0], *cache);
  at::Tensor h = hidden_states(ids, cache);
  // A prefill needs the last position's logits only: the vocabulary projection of the others
  // would be a fifth of a small model's FLOPs, thrown away.
  if (last_logits_only) h = h.narrow(1, T - 1, 1);
  return logits_of(h);
}

at::Tensor DecoderModelImpl::forward_at(const at::Tensor& ids, const at::Tensor& positions) {
  SUBQ_CHECK(ids.dim() == 2 && ids.scalar_type() == torch::kInt64,
             "DecoderModel::forward_at: ids: expected int64 [B, T], got ", ids.sizes(), " ",
             ids.scalar_type());
  SUBQ_CHECK(positions.dim() == 1 && positions.scalar_type() == torch::kInt64,
             "DecoderModel::forward_at: positions: expected int64 [N], got ", positions.sizes());
  if (positions.numel() > 0) {
    const int64_t lo = positions.min().item<int64_t>(), hi = positions.max().item<int64_t>();
    SUBQ_CHECK(lo >= 0 && hi < ids.numel(), "DecoderModel::forward_at: positions: expected ",
               "indices in [0, ", ids.numel(), "), got ", lo < 0 ? lo : hi);
  }
  const at::Tensor h = hidden_states(ids, nullptr);
  // The final norm is per row, so selecting before it is the same as after.
  return logits_of(h.reshape({-1, h.size(-1)}).index_select(0, positions));
}

at::Tensor DecoderModelImpl::logits_of(const at::Tensor& h) {
  const at::Tensor x = norm(h);
  return lm_head ? lm_head(x) : linear_any(x, embed_tokens->weight);
}

at::Tensor DecoderModelImpl::hidden_states(const at::Tensor& ids, ModelCache* cache) {
  const int64_t T = ids.size(1);
  SUBQ_CHECK(T > 0, "DecoderModel::forward: ids: expected at least one token");
  if (ids.numel() > 0) {
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    SUBQ_CHECK(lo >= 0 && hi < config_.vocab_size, "DecoderModel::forward: ids: expected ",
               "token ids in [0, ", config_.vocab_size, "), got ", lo < 0 ? lo : hi);
  }
  int64_t pos0 = 0;
  if (cache) {
    SUBQ_CHECK(ids.size(0) == cache->batch, "DecoderModel::forward: ids: expected batch ",
               cache->batch, " (the cache's), got ", ids.size(0));
    SUBQ_CHECK(T <= cache->max_chunk, "DecoderModel::forward: ids: a chunk of ", T,
               " tokens is longer than the cache's max_chunk ", cache->max_chunk);
    pos0 = cache->seen;
  }
  const RopeTable rope = make_rope_table(pos0, T, config_);
  const MixerContext ctx{pos0, &rope};
  at::Tensor h = embed_tokens(ids);
  if (h.scalar_type() != torch::kFloat32) h = h.to(torch::kFloat32);  // bf16 weights
  for (size_t i = 0; i < layers->size(); ++i)
    h = layers->ptr<DecoderLayerImpl>(i)->forward(h, ctx, cache ? cache->layers[i].get() : nullptr);
  if (cache) cache->seen += T;
  return h;
}

bool DecoderModelImpl::token_decode_ready(const ModelCache& cache) const {
  const at::Tensor& out = lm_head ? lm_head->weight : embed_tokens->weight;
  if (cache.batch != 1 || !embed_tokens->weight.is_contiguous() || !out.is_contiguous() ||
      (lm_head && (lm_head->has_lora() || lm_head->bias.defined())))
    return false;
  for (size_t i = 0; i < layers->size(); ++i)
    if (!layers->ptr<DecoderLayerImpl>(i)->token_decode_ready(*cache.layers[i])) return false;
  return true;
}

at::Tensor DecoderModelImpl::decode_token(int64_t id, ModelCache& cache) {
  SUBQ_CHECK(token_decode_ready(cache), "decode_token: this model or cache has no token path ",
             "(a batch of one, softmax layers and no LoRA; see token_decode_ready)");
  return run_token_path(id, cache);
}

at::Tensor DecoderModelImpl::run_token_path(int64_t id, ModelCache& cache) {
  SUBQ_CHECK(id >= 0 && id < config_.vocab_size, "DecoderModel::forward: ids: expected ",
             "token ids in [0, ", config_.vocab_size, "), got ", id);
  if (!cache.token_scratch) {
    cache.token_scratch = std::make_shared<TokenScratch>();
    const auto [inv_freq, factor] = rope_inv_freq(config_);
    const at::Tensor f = inv_freq.contiguous();
    cache.token_scratch->inv_freq.assign(f.data_ptr<float>(), f.data_ptr<float>() + f.numel());
    cache.token_scratch->rope_factor = factor;
  }
  TokenScratch& s = *cache.token_scratch;
  const int64_t d = config_.hidden_size;
  s.h.resize(static_cast<size_t>(d));
  s.x.resize(static_cast<size_t>(d));
  s.y.resize(static_cast<size_t>(d));
  // RoPE's rows for this position, as make_rope_table: angle = pos * inv_freq in f32, the same
  // angles for both halves, cos and sin times the attention factor when it is not 1.
  const int64_t half = static_cast<int64_t>(s.inv_freq.size());
  s.cos.resize(static_cast<size_t>(2 * half));
  s.sin.resize(static_cast<size_t>(2 * half));
  const float pos = static_cast<float>(cache.seen);
  for (int64_t i = 0; i < half; ++i) {
    const float angle = pos * s.inv_freq[i];
    float c = std::cos(angle), sn = std::sin(angle);
    if (s.rope_factor != 1.0) {  // in f32, as a float tensor times a scalar
      c *= static_cast<float>(s.rope_factor);
      sn *= static_cast<float>(s.rope_factor);
    }
    s.cos[i] = s.cos[i + half] = c;
    s.sin[i] = s.sin[i + half] = sn;
  }
  // h = embed_tokens(id), in f32 whatever the table's dtype.
  const at::Tensor& table = embed_tokens->weight;
  if (table.scalar_type() == torch::kBFloat16) {
    const auto* row = static_cast<const uint16_t*>(table.data_ptr()) + id * d;
    for (int64_t i = 0; i < d; ++i) s.h[i] = bf16_to_f32(row[i]);
  } else {
    std::memcpy(s.h.data(), table.data_ptr<float>() + id * d, static_cast<size_t>(d) * 4);
  }
  for (size_t i = 0; i < layers->size(); ++i)
    layers->ptr<DecoderLayerImpl>(i)->decode_token(s, *cache.layers[i]);
  cache.seen += 1;
  rms_norm_row(s.h.data(), norm->weight.data_ptr<float>(), d, norm->eps, s.x.data());
  const at::Tensor& out = lm_head ? lm_head->weight : table;
  at::Tensor logits = torch::empty({1, 1, out.size(0)});
  matvec_row(out, out.size(0), s.x.data(), logits.data_ptr<float>());
  return logits;
}

ModelCache DecoderModelImpl::new_cache(int64_t batch, int64_t capacity, int64_t max_chunk) const {
  SUBQ_CHECK(batch > 0 && capacity > 0 && max_chunk > 0,
             "new_cache: expected positive batch, capacity and max_chunk, got ", batch, ", ",
             capacity, ", ", max_chunk);
  // The KV caches grow with the context: a length that cannot fit is refused before anything is
  // allocated (a generation of 10^12 tokens must be an error, not an out-of-memory kill).
  const ModelCacheCost cost = cache_cost(max_chunk);
  const long double bytes = (static_cast<long double>(cost.bytes_per_token) * capacity +
                             static_cast<long double>(cost.fixed_bytes)) *
                            batch;
  check_fits_in_memory(bytes > 1e18L ? uint64_t{1} << 60 : static_cast<uint64_t>(bytes),
                       detail::concat("a cache of ", capacity, " tokens x ", batch, " sequences"));
  ModelCache c;
  c.batch = batch;
  c.capacity = capacity;
  c.max_chunk = max_chunk;
  for (size_t i = 0; i < layers->size(); ++i)
    c.layers.push_back(
        layers->ptr<DecoderLayerImpl>(i)->self_attn->make_cache(batch, capacity, max_chunk));
  return c;
}

ModelCacheCost DecoderModelImpl::cache_cost(int64_t max_chunk) const {
  ModelCacheCost cost;
  for (size_t i = 0; i < layers->size(); ++i) {
    const CacheCost c = layers->ptr<DecoderLayerImpl>(i)->self_attn->cache_cost(max_chunk);
    cost.bytes_per_token += c.bytes_per_token;
    cost.fixed_bytes += c.fixed_bytes;
  }
  return cost;
}

int64_t DecoderModelImpl::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

LlamaConfig DecoderModelImpl::config_to_save() const {
  LlamaConfig c = config_;
  c.layers.clear();
  for (const auto& s : specs_) c.layers.push_back(to_layer_spec(s));
  return c;
}

ExpectedTensors DecoderModelImpl::expected_tensors() const {
  ExpectedTensors e;
  for (const auto& p : named_parameters()) e[p.key()] = {p.value().sizes().vec(), false};
  if (!lm_head) e["lm_head.weight"] = {{config_.vocab_size, config_.hidden_size}, true};
  return e;
}

void DecoderModelImpl::set_weights_dtype(at::ScalarType dtype) {
  SUBQ_CHECK(dtype == torch::kFloat32 || dtype == torch::kBFloat16,
             "set_weights_dtype: expected f32 or bf16");
  torch::NoGradGuard no_grad;
  // The matrices: embeddings and projections (norms, gates and LoRA stay f32). Tensor handles,
  // not pointers: named_parameters() returns a temporary, and set_data through a handle changes
  // the parameter itself (they share one TensorImpl).
  std::vector<at::Tensor> matrices;
  for (const auto& p : named_parameters())
    if (p.value().dim() == 2 && p.key().find("lora_") == std::string::npos)
      matrices.push_back(p.value());
  if (matrices.empty()) return;
  // One arena for all of them, in the order a step reads them, on huge pages: a decode step
  // then streams one long region instead of a few hundred 4 KB-paged blocks, each of which
  // restarts the hardware prefetcher.
  int64_t total = 0;
  for (const at::Tensor& t : matrices) total += (t.numel() + 31) / 32 * 32;
  const size_t bytes = static_cast<size_t>(total) * c10::elementSize(dtype);
  void* raw = allocate_on_huge_pages(bytes);
  SUBQ_CHECK(raw != nullptr, "set_weights_dtype: cannot allocate ", bytes, " bytes");
  at::Tensor arena = torch::from_blob(
      raw, {total}, [](void* q) { std::free(q); }, torch::TensorOptions().dtype(dtype));
  int64_t offset = 0;
  for (at::Tensor& t : matrices) {
    at::Tensor slot = arena.narrow(0, offset, t.numel()).view(t.sizes());
    slot.copy_(t);
    t.set_data(slot);
    offset += (t.numel() + 31) / 32 * 32;
  }
}

std::string DecoderModelImpl::parameter_group(const std::string& name) {
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  if (has(".lora_A") || has(".lora_B")) return "lora";
  if (has("embed_tokens") || name.rfind("lm_head.", 0) == 0) return "embeddings";
  if (has("layernorm") || name == "model.norm.weight") return "norms";
  if (has(".mlp.")) return "mlp";
  for (const char* p : {".q_proj.", ".k_proj.", ".v_proj.", ".o_proj."})
    if (has(p)) return "attention";
  return "mixer_new";
}

void DecoderModelImpl::set_trainable(const std::string& group, bool trainable) {
  static const char* kGroups[] = {"embeddings", "norms", "mlp", "attention", "mixer_new", "lora"};
  bool known = false;
  for (const char* g : kGroups) known |= group == g;
  SUBQ_CHECK(known, "set_trainable: group: expected embeddings, norms, mlp, attention, ",
             "mixer_new or lora, got ", group);
  for (auto& p : named_parameters())
    if (parameter_group(p.key()) == group) p.value().set_requires_grad(trainable);
}

void load_weights(DecoderModelImpl& model, const CheckpointTensors& checkpoint) {
  formats::validate_checkpoint_tensors(checkpoint, model.expected_tensors());
  torch::NoGradGuard no_grad;
  for (auto& p : model.named_parameters()) {
    const formats::CheckpointTensor& src = checkpoint.at(p.key());
    const Tensor f32 = src.to_f32();
    at::Tensor dst = p.value();
    SUBQ_CHECK(dst.is_contiguous() && dst.numel() * sizeof(float) == f32.view().nbytes(),
               "load_weights: ", p.key(), ": size mismatch");
    std::memcpy(dst.data_ptr<float>(), f32.view().data(), f32.view().nbytes());
  }
}

namespace {

// Before the model is built from a config, the tensors every model of that config has whatever
// its mixers (embeddings, norms, MLPs) must be in the checkpoint with the config's shapes, and
// fit in memory. So a config's sizes are bounded by the bytes actually in the file: a 1 KB
// config.json asking for a million layers or a hidden size near 2^31 is an error naming the
// first missing or mismatched tensor, never an allocation.
void check_checkpoint_holds_the_model(const formats::Checkpoint& ck) {
  // 5 tensors per layer (2 norms, the MLP's 3), the embedding and the final norm at least.
  const int64_t least = 5 * ck.config.num_hidden_layers + 2;
  SUBQ_CHECK(static_cast<int64_t>(ck.tensors.size()) >= least, ck.dir.string(),
             ": the config describes ", ck.config.num_hidden_layers, " layers (at least ", least,
             " tensors), but the checkpoint holds ", ck.tensors.size(), " tensors");
  formats::ExpectedTensors all = formats::llama_expected_tensors(ck.config), base;
  uint64_t bytes = 0;
  for (auto& [name, t] : all) {
    if (name.find(".self_attn.") != std::string::npos) continue;  // the mixer's own
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    bytes += static_cast<uint64_t>(n) * sizeof(float);
    base.emplace(name, std::move(t));
  }
  formats::validate_checkpoint_tensors(ck, base, /*allow_unknown=*/true);
  check_fits_in_memory(bytes, detail::concat(ck.dir.string(), ": the model (",
                                             bytes / (1024 * 1024), " MiB of f32 weights)"));
}

}  // namespace

DecoderModel load_model(const std::filesystem::path& dir) {
  const formats::Checkpoint ck = formats::load_checkpoint(dir);
  check_checkpoint_holds_the_model(ck);
  DecoderModel model(nullptr);
  {
    const SkipInitGuard skip;  // load_weights overwrites every parameter
    model = DecoderModel(ck.config);
  }
  load_weights(*model, ck);
  model->set_weights_dtype(torch::kFloat32);  // the matrices in one arena, for decode
  model->eval();
  return model;
}

void save_model(const DecoderModelImpl& model, const std::filesystem::path& dir, DType dtype,
                uint64_t max_shard_bytes) {
  std::vector<formats::TensorToSave> tensors;
  std::vector<at::Tensor> keep;  // contiguous copies, alive until written
  for (const auto& p : model.named_parameters()) {
    keep.push_back(p.value().detach().contiguous());
    tensors.push_back({p.key(), DType::kF32, keep.back().sizes().vec(), keep.back().data_ptr()});
  }
  formats::CheckpointSaveOptions opt;
  opt.dtype = dtype;
  opt.max_shard_bytes = max_shard_bytes;
  formats::save_checkpoint(dir, model.config_to_save(), tensors, opt);
}

}  // namespace subq::model
