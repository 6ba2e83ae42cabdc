// Unit tests of the model layer that need no checkpoint: sampling, mechanism options, parameter
// groups and caches. (The model against transformers and against itself is tests/python/
// test_model.py.)
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>

#include "model/decoder.h"
#include "model/generate.h"
#include "model/mechanism.h"
#include "model/modules.h"
#include "subq/error.h"

namespace subq::model {
namespace {

LlamaConfig tiny_config(std::vector<LayerSpec> layers) {
  LlamaConfig c;
  c.hidden_size = 32;
  c.num_hidden_layers = static_cast<int64_t>(layers.size());
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.intermediate_size = 64;
  c.vocab_size = 50;
  c.layers = std::move(layers);
  return c;
}

LayerSpec layer(const std::string& mechanism, nlohmann::json options = nlohmann::json::object()) {
  return {mechanism, std::move(options)};
}

TEST(Sampling, GreedyTakesTheLowestIdAmongEqualMaxima) {
  std::mt19937_64 rng(0);
  SamplingOptions greedy{0.0, 0, 1.0, 0};
  EXPECT_EQ(sample_next(torch::tensor({1.f, 3.f, 3.f, 2.f}), greedy, rng), 1);
}

TEST(Sampling, TopKAndTopPKeepOnlyTheirCandidatesWithSoftmaxFrequencies) {
  const at::Tensor logits = torch::tensor({0.f, 1.f, 2.f, 3.f});
  std::mt19937_64 rng(1);
  std::map<int64_t, int> counts;
  const int n = 40000;
  SamplingOptions top2{1.0, 2, 1.0, 0};
  for (int i = 0; i < n; ++i) ++counts[sample_next(logits, top2, rng)];
  EXPECT_EQ(counts.size(), 2u);
  const double p3 = std::exp(3.0) / (std::exp(3.0) + std::exp(2.0));  // 0.731
  EXPECT_NEAR(counts[3] / double(n), p3, 0.01);
  // top_p 0.6: the most likely token alone has 0.64 of the mass.
  counts.clear();
  SamplingOptions top_p{1.0, 0, 0.6, 0};
  for (int i = 0; i < 1000; ++i) ++counts[sample_next(logits, top_p, rng)];
  EXPECT_EQ(counts.size(), 1u);
  EXPECT_EQ(counts[3], 1000);
  // top_p 0.9 needs the two most likely (0.64 + 0.24 = 0.88 < 0.9 -> three).
  counts.clear();
  SamplingOptions top_p9{1.0, 0, 0.9, 0};
  for (int i = 0; i < 5000; ++i) ++counts[sample_next(logits, top_p9, rng)];
  EXPECT_EQ(counts.size(), 3u);
  EXPECT_EQ(counts.count(0), 0u);
}

TEST(Sampling, SameSeedSameDraws) {
  const at::Tensor logits = torch::randn({100});
  SamplingOptions o{0.9, 0, 1.0, 0};
  std::mt19937_64 a(42), b(42), c(43);
  std::vector<int64_t> da, db, dc;
  for (int i = 0; i < 50; ++i) {
    da.push_back(sample_next(logits, o, a));
    db.push_back(sample_next(logits, o, b));
    dc.push_back(sample_next(logits, o, c));
  }
  EXPECT_EQ(da, db);
  EXPECT_NE(da, dc);
}

TEST(Sampling, BadOptionsAndNaNAreErrors) {
  std::mt19937_64 rng(0);
  EXPECT_THROW(validate_sampling({-1.0, 0, 1.0, 0}), Error);
  EXPECT_THROW(validate_sampling({1.0, -2, 1.0, 0}), Error);
  EXPECT_THROW(validate_sampling({1.0, 0, 0.0, 0}), Error);
  EXPECT_THROW(validate_sampling({1.0, 0, 1.5, 0}), Error);
  EXPECT_THROW(sample_next(torch::tensor({0.f, NAN}), {1.0, 0, 1.0, 0}, rng), Error);
}

void expect_config_error(const LayerSpec& l, const std::string& needle) {
  try {
    DecoderModel m(tiny_config({l}));
    FAIL() << "no error for " << l.options.dump();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("subq.layers[0]"), std::string::npos) << e.what();
  }
}

TEST(Mechanism, BadOptionsNameTheLayerAndTheOption) {
  expect_config_error(layer("linear", {{"featuremap", "elu1"}}), "unknown option \"featuremap\"");
  expect_config_error(layer("linear", {{"feature_map", "performer"}}), "feature_map");
  expect_config_error(layer("linear", {{"gate", "sometimes"}}), "gate");
  expect_config_error(layer("hybrid", {{"gate", "per_dim"}}), "gate");
  expect_config_error(layer("linear", {{"chunk_size", 48}}), "chunk_size");
  expect_config_error(layer("softmax", {{"window", -3}}), "window");
  expect_config_error(layer("short_conv", {{"conv_width", 9}}), "conv_width");
  expect_config_error(layer("mamba2", {{"head_dim", 48}}), "head_dim");
  expect_config_error(layer("mamba2", {{"n_groups", 3}}), "n_groups");
  expect_config_error(layer("softmax", {{"lora", {{"r", 0}}}}), "lora");
  expect_config_error(layer("softmax", {{"lora", {{"targets", {"qkv"}}}}}), "targets");
}

TEST(Mechanism, SavedSpecsRoundTripWithEveryOptionWrittenOut) {
  const LlamaConfig c = tiny_config({layer("softmax", {{"window", 5}}), layer("linear"),
                                     layer("hybrid", {{"gate", "scalar"}}), layer("short_conv"),
                                     layer("mamba2", {{"state_size", 8}})});
  DecoderModel m(c);
  const LlamaConfig saved = m->config_to_save();
  EXPECT_EQ(saved.layers[1].options["feature_map"], "hedgehog");
  EXPECT_EQ(saved.layers[1].options["feature_dim"], 4);  // head_dim / 2
  DecoderModel again(saved);
  EXPECT_EQ(again->config_to_save().layers, saved.layers);
  EXPECT_EQ(again->num_parameters(), m->num_parameters());
}

TEST(ParameterGroups, FreezeAndTrainByGroup) {
  DecoderModel m(tiny_config({layer("linear", {{"gate", "scalar"}, {"lora", {{"r", 2}}}})}));
  for (const char* g : {"embeddings", "norms", "mlp", "attention"}) m->set_trainable(g, false);
  std::map<std::string, int> trainable;
  for (const auto& p : m->named_parameters())
    if (p.value().requires_grad()) ++trainable[DecoderModelImpl::parameter_group(p.key())];
  EXPECT_EQ(trainable.count("embeddings") + trainable.count("mlp") + trainable.count("attention"),
            0u);
  EXPECT_GT(trainable["mixer_new"], 0);  // feature maps and the gate
  EXPECT_EQ(trainable["lora"], 8);       // A and B on q, k, v, o
  EXPECT_EQ(DecoderModelImpl::parameter_group("model.layers.0.self_attn.g_proj.weight"),
            "mixer_new");
  EXPECT_THROW(m->set_trainable("everything", true), Error);
  // Gradients reach only what is trainable.
  const at::Tensor ids = torch::randint(0, 50, {1, 9}, torch::kInt64);
  m->forward(ids).sum().backward();
  for (const auto& p : m->named_parameters())
    EXPECT_EQ(p.value().grad().defined(), p.value().requires_grad()) << p.key();
}

// forward_at: the logits of chosen positions of a batch, the rows of the whole forward's, with
// gradients that reach the weights; bad positions are errors.
TEST(ForwardAt, EqualsTheWholeForwardsRowsAndIsDifferentiable) {
  DecoderModel m(tiny_config({layer("softmax"), layer("linear", {{"gate", "scalar"}})}));
  torch::manual_seed(5);
  const at::Tensor ids = torch::randint(0, 50, {2, 11}, torch::kInt64);
  const at::Tensor pos = torch::tensor(std::vector<int64_t>{0, 7, 10, 11, 21}, torch::kInt64);
  const at::Tensor whole = m->forward(ids).reshape({22, -1}).index_select(0, pos);
  const at::Tensor at = m->forward_at(ids, pos);
  ASSERT_EQ(at.sizes(), whole.sizes());
  EXPECT_LT((at - whole).abs().max().item<double>(), 1e-5);
  at.sum().backward();
  EXPECT_TRUE(m->embed_tokens->weight.grad().defined());
  EXPECT_THROW(m->forward_at(ids, torch::tensor(std::vector<int64_t>{22}, torch::kInt64)), Error);
  EXPECT_THROW(m->forward_at(ids, torch::tensor(std::vector<int64_t>{-1}, torch::kInt64)), Error);
}

TEST(Cache, SizesAndErrors) {
  DecoderModel m(tiny_config({layer("softmax"), layer("linear", {{"gate", "scalar"}})}));
  torch::NoGradGuard no_grad;
  ModelCache cache = m->new_cache(1, 16, 8);
  const ModelCacheCost cost = m->cache_cost(8);
  EXPECT_EQ(cost.bytes_per_token, 2u * 2 * 8 * 4);  // K and V, 2 kv heads of 8, fp32
  m->forward(torch::zeros({1, 8}, torch::kInt64), &cache);
  m->forward(torch::zeros({1, 8}, torch::kInt64), &cache);
  EXPECT_THROW(m->forward(torch::zeros({1, 1}, torch::kInt64), &cache), Error);  // 17 > 16
  ModelCache small = m->new_cache(1, 16, 8);
  EXPECT_THROW(m->forward(torch::zeros({1, 9}, torch::kInt64), &small), Error);  // 9 > max_chunk
  EXPECT_THROW(m->forward(torch::zeros({2, 1}, torch::kInt64), &small), Error);  // batch 2 != 1
}

// The decode step's fast paths (one matvec over q, k and v and one over gate and up, when the
// weights lie back to back in the arena; RMSNorm, RoPE and silu · up in one loop each) against
// the general code: the same model decoded token by token with autograd on, which takes none of
// them.
TEST(Decode, FastPathsMatchTheGeneralCode) {
  for (const char* mech : {"softmax", "linear"}) {
    LlamaConfig c = tiny_config({layer(mech), layer("softmax")});
    c.qk_norm = std::string(mech) == "softmax";  // Qwen3's per-head norms on the narrowed views
    DecoderModel fast(c), general(c);
    {
      torch::NoGradGuard no_grad;
      auto src = fast->parameters();
      auto dst = general->parameters();
      for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
    }
    fast->set_weights_dtype(torch::kFloat32);  // the arena: q, k, v (and gate, up) adjacent
    std::map<std::string, const ProjectionImpl*> proj;
    for (const auto& m : fast->named_modules())
      if (auto* p = dynamic_cast<const ProjectionImpl*>(m.value().get())) proj[m.key()] = p;
    const std::string a = "model.layers.1.self_attn.", f = "model.layers.1.mlp.";
    ASSERT_TRUE(proj.count(a + "q_proj")) << "module names changed";
    const at::Tensor qkv =
        adjacent_rows({proj[a + "q_proj"], proj[a + "k_proj"], proj[a + "v_proj"]});
    ASSERT_TRUE(qkv.defined()) << "q, k and v are not adjacent in the arena";
    EXPECT_TRUE(
        torch::equal(qkv, torch::cat({proj[a + "q_proj"]->weight, proj[a + "k_proj"]->weight,
                                      proj[a + "v_proj"]->weight})));
    EXPECT_TRUE(adjacent_rows({proj[f + "gate_proj"], proj[f + "up_proj"]}).defined());
    EXPECT_FALSE(adjacent_rows({proj[f + "gate_proj"], proj[f + "down_proj"]}).defined());
    EXPECT_FALSE(adjacent_rows({proj[a + "k_proj"], proj[a + "q_proj"]}).defined());

    const at::Tensor ids = torch::randint(0, 50, {1, 7}, torch::kInt64);
    ModelCache cf = fast->new_cache(1, 16, 8), cg = general->new_cache(1, 16, 8);
    for (int64_t t = 0; t < 7; ++t) {
      at::Tensor lf, lg;
      {
        torch::NoGradGuard no_grad;
        lf = fast->forward(ids.narrow(1, t, 1), &cf);
      }
      lg = general->forward(ids.narrow(1, t, 1), &cg);  // autograd on: the general code
      EXPECT_TRUE(lg.requires_grad());
      EXPECT_LE((lf - lg.detach()).abs().max().item<double>(), 1e-5 * lg.abs().max().item<double>())
          << mech << " step " << t;
    }
  }
}

// The token path (model/token_decode.h: one token of one sequence on raw rows) against the
// general code, step by step past a sliding window's ring, for what a teacher may have: q, k, v,
// o and MLP biases, Qwen3's q and k norms, yarn RoPE, a Mistral window, tied or untied
// embeddings, f32 or bf16 weights (whose general code is the fast paths of the test above).
TEST(Decode, TokenPathMatchesTheGeneralCode) {
  for (int variant = 0; variant < 4; ++variant) {
    LlamaConfig c = tiny_config({layer("softmax"), layer("softmax"), layer("softmax")});
    c.attention_qkv_bias = c.attention_o_bias = c.mlp_bias = variant % 2 == 0;
    c.qk_norm = variant == 1;
    if (variant == 1) {  // yarn: scaled frequencies and an attention factor other than 1
      c.rope.type = "yarn";
      c.rope.factor = 4.0;
      c.rope.original_max_position_embeddings = 8;
    }
    c.attention_windows = variant >= 2 ? std::vector<int64_t>{0, 4, 3} : std::vector<int64_t>{};
    c.tie_word_embeddings = variant != 3;
    const bool bf16 = variant == 3;
    DecoderModel token(c), general(c);
    {
      torch::NoGradGuard no_grad;
      torch::manual_seed(variant);
      auto src = token->parameters();
      auto dst = general->parameters();
      for (size_t i = 0; i < src.size(); ++i) {
        src[i].copy_(0.3 * torch::randn_like(src[i]) + (src[i].dim() == 1 ? 1.0 : 0.0));
        dst[i].copy_(src[i]);
      }
    }
    token->set_weights_dtype(bf16 ? torch::kBFloat16 : torch::kFloat32);
    general->set_weights_dtype(bf16 ? torch::kBFloat16 : torch::kFloat32);
    general->use_token_decode = false;
    const int64_t steps = 12;
    const at::Tensor ids = torch::randint(0, 50, {1, steps}, torch::kInt64);
    // A prefill of 3 tokens first (the general code for both), then single tokens.
    ModelCache ct = token->new_cache(1, 16, 4), cg = general->new_cache(1, 16, 4);
    torch::NoGradGuard no_grad;
    token->forward(ids.narrow(1, 0, 3), &ct);
    general->forward(ids.narrow(1, 0, 3), &cg);
    EXPECT_TRUE(token->token_decode_ready(ct)) << variant;
    for (int64_t t = 3; t < steps; ++t) {
      const at::Tensor lt = token->decode_token(ids[0][t].item<int64_t>(), ct);
      const at::Tensor lg = general->forward(ids.narrow(1, t, 1), &cg);
      const double scale = lg.abs().max().item<double>();
      EXPECT_LE((lt - lg).abs().max().item<double>(), 1e-5 * scale) << variant << " step " << t;
      EXPECT_EQ(lt.sizes(), lg.sizes());
    }
    EXPECT_EQ(ct.seen, cg.seen);
    ASSERT_TRUE(ct.token_scratch) << "the token path was not taken";
    EXPECT_FALSE(cg.token_scratch) << "the reference took the token path";
  }
}

// A model the token path cannot run (LoRA on q; a linear mixer) or a batch of two goes to the
// general code, and forward still decodes.
TEST(Decode, TokenPathIsNotTakenWhereItDoesNotApply) {
  nlohmann::json lora = {{"lora", {{"r", 2}, {"alpha", 4.0}, {"targets", {"q_proj"}}}}};
  for (const auto& spec : {layer("softmax", lora), layer("linear")}) {
    DecoderModel m(tiny_config({layer("softmax"), spec}));
    ModelCache cache = m->new_cache(1, 8, 4);
    EXPECT_FALSE(m->token_decode_ready(cache));
    torch::NoGradGuard no_grad;
    EXPECT_EQ(m->forward(torch::zeros({1, 1}, torch::kInt64), &cache).sizes(),
              (std::vector<int64_t>{1, 1, 50}));
    EXPECT_FALSE(cache.token_scratch);
  }
  DecoderModel m(tiny_config({layer("softmax")}));
  ModelCache two = m->new_cache(2, 8, 4);
  EXPECT_FALSE(m->token_decode_ready(two));
  EXPECT_THROW(m->decode_token(0, two), Error);
}

TEST(Forward, BadIdsAreErrors) {
  DecoderModel m(tiny_config({layer("softmax")}));
  EXPECT_THROW(m->forward(torch::full({1, 3}, 50, torch::kInt64)), Error);
  EXPECT_THROW(m->forward(torch::full({1, 3}, -1, torch::kInt64)), Error);
  EXPECT_THROW(m->forward(torch::zeros({3}, torch::kInt64)), Error);
  EXPECT_THROW(m->forward(torch::zeros({1, 3}, torch::kInt32)), Error);
}

}  // namespace
}  // namespace subq::model
