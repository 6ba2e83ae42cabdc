// config.json: LLaMA fields, defaults, transformers 4 and 5 spellings, the subq section, round
// trips that keep unknown fields, and one bad file per validation rule.
#include "formats/hf_config.h"

#include <gtest/gtest.h>

#include "tests/formats/checkpoint_test_util.h"

namespace subq::formats {
namespace {

using nlohmann::json;
using testing::expect_error;

// As transformers 5.24's LlamaConfig(...).save_pretrained writes it.
const char* kTransformers5Config = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 1,
  "dtype": "float32",
  "eos_token_id": 2,
  "head_dim": 16,
  "hidden_act": "silu",
  "hidden_size": 64,
  "initializer_range": 0.02,
  "intermediate_size": 128,
  "max_position_embeddings": 128,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 4,
  "num_hidden_layers": 2,
  "num_key_value_heads": 2,
  "pad_token_id": null,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-06,
  "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
  "tie_word_embeddings": true,
  "transformers_version": "5.24.0",
  "use_cache": true,
  "vocab_size": 100
})";

// The smallest accepted config, to which each error test adds or changes one field.
json minimal() {
  return {{"hidden_size", 64},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"intermediate_size", 128},
          {"vocab_size", 100}};
}

void expect_config_error(const json& j, std::initializer_list<std::string> parts) {
  expect_error([&] { parse_llama_config(j.dump(), "config.json"); }, parts);
}

TEST(HfConfig, ParsesATransformers5Config) {
  const LlamaConfig c = parse_llama_config(kTransformers5Config);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_hidden_layers, 2);
  EXPECT_EQ(c.num_attention_heads, 4);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.intermediate_size, 128);
  EXPECT_EQ(c.vocab_size, 100);
  EXPECT_EQ(c.max_position_embeddings, 128);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{2});
  EXPECT_EQ(c.dtype, "float32");
  ASSERT_EQ(c.layers.size(), 2u);
  EXPECT_EQ(c.layers[0].mechanism, "softmax");
  EXPECT_TRUE(all_layers_softmax(c));
}

TEST(HfConfig, DefaultsAndTheTransformers4Spelling) {
  json j = minimal();
  j["torch_dtype"] = "bfloat16";
  j["rope_scaling"] = nullptr;
  j["eos_token_id"] = {2, 7};
  j["bos_token_id"] = nullptr;
  const LlamaConfig c = parse_llama_config(j.dump());
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.bos_token_id.has_value());
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{2, 7}));
  EXPECT_EQ(c.dtype, "bfloat16");
  // Saved under the key it came from.
  const json out = json::parse(llama_config_to_json(c));
  EXPECT_EQ(out["torch_dtype"], "bfloat16");
  EXPECT_FALSE(out.contains("dtype"));
  EXPECT_EQ(out["eos_token_id"], json({2, 7}));
  EXPECT_EQ(out["rope_theta"], 10000.0);
  EXPECT_TRUE(out["bos_token_id"].is_null());
  EXPECT_EQ(out["model_type"], "llama");
}

TEST(HfConfig, RoundTripKeepsEveryFieldAndIsDeterministic) {
  json j = json::parse(kTransformers5Config);
  j["custom"] = {{"nested", {1, 2, {{"x", "y"}}}}, {"unicode", "é✓"}};
  const LlamaConfig c = parse_llama_config(j.dump());
  const std::string text = llama_config_to_json(c);
  EXPECT_EQ(text.back(), '\n');
  EXPECT_NE(text.find("\n  \"architectures\""), std::string::npos);  // 2-space indent
  const json out = json::parse(text);
  EXPECT_EQ(out, j);  // nothing lost, nothing added
  const LlamaConfig again = parse_llama_config(text);
  EXPECT_EQ(llama_config_to_json(again), text);
}

TEST(HfConfig, SavingAChangedConfigUpdatesTheFields) {
  LlamaConfig c = parse_llama_config(kTransformers5Config);
  c.rope_theta = 1234.0;
  c.dtype = "bfloat16";
  c.tie_word_embeddings = false;
  const json out = json::parse(llama_config_to_json(c));
  EXPECT_EQ(out["rope_parameters"]["rope_theta"], 1234.0);
  EXPECT_FALSE(out.contains("rope_theta"));
  EXPECT_EQ(out["dtype"], "bfloat16");
  EXPECT_EQ(out["tie_word_embeddings"], false);
}

TEST(HfConfig, SubqSection) {
  json j = minimal();
  j["subq"] = {{"version", 1},
               {"layers",
                {{{"mechanism", "softmax"}},
                 {{"mechanism", "hybrid"}, {"window", 64}, {"feature_map", "hedgehog"}}}}};
  const LlamaConfig c = parse_llama_config(j.dump());
  ASSERT_EQ(c.layers.size(), 2u);
  EXPECT_EQ(c.layers[0], LayerSpec{});
  EXPECT_EQ(c.layers[1].mechanism, "hybrid");
  EXPECT_EQ(c.layers[1].options, (json{{"window", 64}, {"feature_map", "hedgehog"}}));
  EXPECT_FALSE(all_layers_softmax(c));
  const json out = json::parse(llama_config_to_json(c));
  EXPECT_EQ(out["subq"], j["subq"]);
  EXPECT_EQ(parse_llama_config(out.dump()).layers, c.layers);

  // Written only when some layer is not plain softmax.
  LlamaConfig plain = c;
  plain.layers[1] = LayerSpec{};
  EXPECT_FALSE(json::parse(llama_config_to_json(plain)).contains("subq"));
  for (const char* m : {"linear", "short_conv", "mamba2"}) {
    LlamaConfig d = plain;
    d.layers[0].mechanism = m;
    EXPECT_EQ(parse_llama_config(llama_config_to_json(d)).layers[0].mechanism, m);
  }
}

TEST(HfConfig, LoadNamesTheFile) {
  testing::ScratchDir dir;
  const auto path = dir / "config.json";
  json j = minimal();
  j["hidden_size"] = -1;
  testing::write_bytes(path, j.dump());
  expect_error([&] { load_llama_config(path); }, {path.string(), "hidden_size"});
  save_llama_config(path, parse_llama_config(minimal().dump()));
  EXPECT_EQ(load_llama_config(path).hidden_size, 64);
  EXPECT_EQ(testing::count_temp_files(dir.path()), 0);
  expect_error([&] { load_llama_config(dir / "absent.json"); }, {"absent.json", "cannot open"});
}

// --- one test per validation rule -------------------------------------------------------------

TEST(HfConfigErrors, NotJsonOrNotAnObject) {
  expect_error([] { parse_llama_config("{\"hidden_size\": ", "config.json"); },
               {"config.json", "invalid JSON"});
  expect_error([] { parse_llama_config("[1]", "config.json"); },
               {"config.json", "expected a JSON object, got array"});
  expect_error([] { parse_llama_config("{\"vocab_size\": 1, \"vocab_size\": 2}", "config.json"); },
               {"config.json", "duplicate key 'vocab_size'"});
}

TEST(HfConfigErrors, NestedTooDeeply) {
  json j = minimal();
  const std::string text = j.dump();
  const std::string deep =
      "{\"custom\": " + std::string(100000, '[') + std::string(100000, ']') + ", " + text.substr(1);
  expect_error([&] { parse_llama_config(deep, "config.json"); },
               {"config.json", "nested deeper than 64 levels"});
}

TEST(HfConfigErrors, MissingRequiredSizes) {
  for (const char* field : {"hidden_size", "num_hidden_layers", "num_attention_heads",
                            "intermediate_size", "vocab_size"}) {
    json j = minimal();
    j.erase(field);
    expect_config_error(j, {"config.json", field, "missing"});
  }
}

TEST(HfConfigErrors, SizesMustBePositiveIntegers) {
  for (const char* field :
       {"hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "head_dim", "intermediate_size", "vocab_size", "max_position_embeddings"}) {
    for (const json& bad :
         {json(0), json(-3), json(2.5), json("64"), json(true), json(int64_t{1} << 40)}) {
      json j = minimal();
      j[field] = bad;
      expect_config_error(j, {"config.json", std::string(field) + ": expected a positive integer"});
    }
  }
}

TEST(HfConfigErrors, HeadsMustDivide) {
  json j = minimal();
  j["num_key_value_heads"] = 3;
  expect_config_error(
      j, {"config.json", "num_key_value_heads: expected a divisor of num_attention_heads (4)"});
  j = minimal();
  j["hidden_size"] = 66;
  expect_config_error(
      j, {"config.json", "hidden_size: 66 is not divisible by num_attention_heads (4)"});
  j["head_dim"] = 16;  // an explicit head_dim makes it fine
  EXPECT_EQ(parse_llama_config(j.dump()).head_dim, 16);
}

TEST(HfConfigErrors, FloatFieldsMustBePositive) {
  for (const char* field : {"rms_norm_eps", "rope_theta"}) {
    for (const json& bad : {json(0), json(-1e-6), json("1e-6")}) {
      json j = minimal();
      j[field] = bad;
      expect_config_error(
          j, {"config.json", std::string(field) + ": expected a positive finite number"});
    }
  }
}

TEST(HfConfigErrors, ActivationAndBiases) {
  json j = minimal();
  j["hidden_act"] = "gelu";
  expect_config_error(j, {"config.json", "hidden_act: expected \"silu\""});
  for (const char* bias : {"attention_bias", "mlp_bias"}) {
    j = minimal();
    j[bias] = "no";
    expect_config_error(j, {"config.json", std::string(bias) + ": expected true or false"});
    j["model_type"] = "mistral";
    j[bias] = true;
    expect_config_error(
        j, {"config.json", std::string(bias) + ": true is not supported for model_type mistral"});
  }
  j = minimal();
  j["model_type"] = "qwen2";
  j["mlp_bias"] = true;
  expect_config_error(j, {"mlp_bias: true is not supported for model_type qwen2"});
}

TEST(HfConfig, FamiliesSetTheirFields) {
  json j = minimal();
  j["attention_bias"] = true;
  j["mlp_bias"] = true;
  LlamaConfig c = parse_llama_config(j.dump());
  EXPECT_TRUE(c.attention_qkv_bias && c.attention_o_bias && c.mlp_bias && !c.qk_norm);
  j = minimal();
  j["model_type"] = "qwen2";  // q, k, v biases always; o none
  c = parse_llama_config(j.dump());
  EXPECT_TRUE(c.attention_qkv_bias && !c.attention_o_bias && !c.qk_norm);
  j["model_type"] = "qwen3";
  c = parse_llama_config(j.dump());
  EXPECT_TRUE(!c.attention_qkv_bias && c.qk_norm);
  EXPECT_EQ(c.attention_windows, std::vector<int64_t>(c.num_hidden_layers, 0));
  // Qwen: the window only with use_sliding_window, from max_window_layers on.
  j["sliding_window"] = 16;
  j["max_window_layers"] = 1;
  EXPECT_EQ(parse_llama_config(j.dump()).attention_windows,
            std::vector<int64_t>(c.num_hidden_layers, 0));
  j["use_sliding_window"] = true;
  std::vector<int64_t> want(c.num_hidden_layers, 16);
  want[0] = 0;
  EXPECT_EQ(parse_llama_config(j.dump()).attention_windows, want);
  // layer_types wins over max_window_layers.
  j["layer_types"] = json::array();
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    j["layer_types"].push_back(i == 1 ? "sliding_attention" : "full_attention");
  want.assign(c.num_hidden_layers, 0);
  want[1] = 16;
  EXPECT_EQ(parse_llama_config(j.dump()).attention_windows, want);
  j = minimal();
  j["model_type"] = "mistral";
  j["sliding_window"] = 8;
  EXPECT_EQ(parse_llama_config(j.dump()).attention_windows,
            std::vector<int64_t>(c.num_hidden_layers, 8));
  j["sliding_window"] = nullptr;
  EXPECT_EQ(parse_llama_config(j.dump()).attention_windows,
            std::vector<int64_t>(c.num_hidden_layers, 0));
  j["sliding_window"] = 0;
  expect_config_error(j, {"sliding_window: expected a positive integer"});
  j = minimal();
  j["sliding_window"] = 8;
  expect_config_error(j, {"sliding_window: not supported for model_type llama"});
}

TEST(HfConfigErrors, ModelType) {
  json j = minimal();
  j["model_type"] = "gemma";
  expect_config_error(j, {"config.json", "model_type: expected \"llama\", \"mistral\""});
  j["model_type"] = 3;
  expect_config_error(j, {"config.json", "model_type: expected"});
}

TEST(HfConfig, RopeTypes) {
  json j = minimal();
  j["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 5e5},
                          {"factor", 32.0},          {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  LlamaConfig c = parse_llama_config(j.dump());
  EXPECT_EQ(c.rope.type, "llama3");
  EXPECT_EQ(c.rope.factor, 32.0);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.rope_theta, 5e5);
  j["rope_parameters"] = {{"rope_type", "yarn"},   {"factor", 4.0},     {"mscale", 0.7},
                          {"mscale_all_dim", 0.7}, {"truncate", false}, {"beta_fast", nullptr}};
  c = parse_llama_config(j.dump());
  EXPECT_EQ(c.rope.type, "yarn");
  EXPECT_EQ(c.rope.beta_fast, 32.0);
  EXPECT_EQ(*c.rope.mscale, 0.7);
  EXPECT_FALSE(c.rope.truncate);
  EXPECT_FALSE(c.rope.attention_factor.has_value());
  // transformers 4's spelling: "type" in rope_scaling.
  j = minimal();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  EXPECT_EQ(parse_llama_config(j.dump()).rope.factor, 2.0);
}

TEST(HfConfigErrors, RopeScaling) {
  json j = minimal();
  j["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
  expect_config_error(j, {"config.json", "rope_scaling: unsupported rope_type \"dynamic\""});
  j["rope_scaling"] = {{"rope_type", "longrope"}};
  expect_config_error(j, {"config.json", "rope_scaling: unsupported rope_type \"longrope\""});
  j["rope_scaling"] = {{"rope_type", "default"}, {"factor", 2.0}};
  expect_config_error(j, {"config.json", "rope_scaling: unsupported field 'factor'"});
  j["rope_scaling"] = {{"rope_type", "linear"}};
  expect_config_error(j, {"config.json", "factor: missing"});
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", -1.0}};
  expect_config_error(j, {"config.json", "factor: expected a positive finite number"});
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  expect_config_error(j, {"low_freq_factor: missing"});
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 4.0},
                       {"high_freq_factor", 1.0},
                       {"original_max_position_embeddings", 64}};
  expect_config_error(j, {"high_freq_factor: must be above low_freq_factor"});
  j["rope_scaling"] = 3;
  expect_config_error(j, {"config.json", "rope_scaling: expected an object or null"});
  j = minimal();
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 2.0}, {"low_freq_factor", 1.0}};
  expect_config_error(j, {"rope_parameters: unsupported field 'low_freq_factor'"});
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e4}};
  j["rope_theta"] = 5e5;
  expect_config_error(j, {"config.json", "rope_parameters.rope_theta", "disagrees"});
  j["rope_scaling"] = {{"rope_type", "default"}};  // plain RoPE spelled out is fine
  j["rope_theta"] = 1e4;
  EXPECT_EQ(parse_llama_config(j.dump()).rope_theta, 1e4);
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  expect_config_error(j, {"rope_scaling: disagrees with rope_parameters"});
}

TEST(HfConfigErrors, TokenIdsAndFlags) {
  json j = minimal();
  j["eos_token_id"] = "2";
  expect_config_error(j, {"config.json", "eos_token_id: expected a non-negative integer"});
  j["eos_token_id"] = {1, -2};
  expect_config_error(j, {"config.json", "eos_token_id"});
  j = minimal();
  j["bos_token_id"] = 1.5;
  expect_config_error(j, {"config.json", "bos_token_id"});
  j = minimal();
  j["tie_word_embeddings"] = 1;
  expect_config_error(j, {"config.json", "tie_word_embeddings: expected true or false"});
  j = minimal();
  j["dtype"] = 16;
  expect_config_error(j, {"config.json", "dtype: expected a string"});
  j["dtype"] = "float16";
  j["torch_dtype"] = "bfloat16";
  expect_config_error(j, {"config.json", "torch_dtype", "disagrees"});
}

TEST(HfConfigErrors, SubqSection) {
  const json layers = {{{"mechanism", "softmax"}}, {{"mechanism", "linear"}}};
  json j = minimal();
  j["subq"] = {{"version", 2}, {"layers", layers}};
  expect_config_error(j, {"config.json", "subq.version: expected 1, got 2"});
  j["subq"] = {{"layers", layers}};
  expect_config_error(j, {"config.json", "subq.version: expected 1"});
  j["subq"] = {{"version", 1}};
  expect_config_error(j, {"config.json", "subq.layers: expected an array"});
  j["subq"] = {{"version", 1}, {"layers", {{{"mechanism", "softmax"}}}}};
  expect_config_error(
      j, {"config.json", "subq.layers: expected 2 entries (num_hidden_layers), got 1"});
  j["subq"] = {{"version", 1}, {"layers", {{{"mechanism", "softmax"}}, {{"mechanism", "rwkv"}}}}};
  expect_config_error(j, {"config.json", "subq.layers[1]: mechanism: expected one of", "\"rwkv\""});
  j["subq"] = {{"version", 1}, {"layers", {{{"mechanism", "softmax"}}, {{"window", 3}}}}};
  expect_config_error(j, {"config.json", "subq.layers[1]: mechanism: expected a string"});
  j["subq"] = {{"version", 1}, {"layers", {{{"mechanism", "softmax"}}, "linear"}}};
  expect_config_error(j, {"config.json", "subq.layers[1]: expected an object"});
  j["subq"] = {{"version", 1}, {"layers", layers}, {"extra", 1}};
  expect_config_error(j, {"config.json", "subq: unknown field 'extra'"});
  j["subq"] = "linear";
  expect_config_error(j, {"config.json", "subq: expected an object"});
}

TEST(HfConfigErrors, SavingAnInvalidConfigThrows) {
  LlamaConfig c = parse_llama_config(minimal().dump());
  c.layers.pop_back();
  expect_error([&] { llama_config_to_json(c); }, {"subq.layers: expected 2 entries"});
  c = parse_llama_config(minimal().dump());
  c.num_key_value_heads = 3;
  expect_error([&] { llama_config_to_json(c); }, {"num_key_value_heads"});
}

}  // namespace
}  // namespace subq::formats
