// Checkpoint directories: save -> load -> save is byte-identical (single file and sharded, f32,
// bf16, f16), the expected LlamaForCausalLM tensors, and one bad directory per validation rule.
#include "formats/checkpoint.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/formats/checkpoint_test_util.h"

namespace subq::formats {
namespace {

using nlohmann::json;
using testing::expect_error;
using testing::ScratchDir;

LlamaConfig tiny_config(bool tied) {
  json j = {{"hidden_size", 8},           {"num_hidden_layers", 2},  {"num_attention_heads", 2},
            {"num_key_value_heads", 1},   {"intermediate_size", 12}, {"vocab_size", 10},
            {"tie_word_embeddings", tied}};
  return parse_llama_config(j.dump());
}

// Random f32 weights with the names and shapes a LlamaForCausalLM of this config has.
struct Weights {
  std::vector<std::vector<float>> storage;
  std::vector<TensorToSave> tensors;
};
Weights random_weights(const LlamaConfig& c, bool with_lm_head) {
  Weights w;
  uint32_t state = 12345;
  for (const auto& [name, expected] : llama_expected_tensors(c)) {
    if (name == "lm_head.weight" && !with_lm_head) continue;
    int64_t n = 1;
    for (int64_t d : expected.shape) n *= d;
    std::vector<float> values(n);
    for (float& v : values) {
      state = state * 1664525u + 1013904223u;
      v = static_cast<float>(state >> 8) / 16777216.0f - 0.5f;
    }
    w.storage.push_back(std::move(values));
    w.tensors.push_back({name, DType::kF32, expected.shape, w.storage.back().data()});
  }
  return w;
}

std::map<std::string, std::string> dir_contents(const std::filesystem::path& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    files[e.path().filename().string()] = testing::read_bytes(e.path());
  return files;
}

class CheckpointRoundTrip : public ::testing::TestWithParam<std::tuple<DType, uint64_t>> {};

TEST_P(CheckpointRoundTrip, SaveLoadSaveIsByteIdentical) {
  const auto [dtype, max_shard_bytes] = GetParam();
  const LlamaConfig config = tiny_config(false);
  const Weights w = random_weights(config, true);
  ScratchDir a, b;
  save_checkpoint(a.path(), config, w.tensors, {dtype, max_shard_bytes});
  const Checkpoint loaded = load_checkpoint(a.path());
  validate_checkpoint_tensors(loaded, llama_expected_tensors(loaded.config));
  EXPECT_EQ(loaded.config.dtype, dtype == DType::kF32    ? "float32"
                                 : dtype == DType::kBF16 ? "bfloat16"
                                                         : "float16");
  for (const TensorToSave& t : w.tensors) {
    const CheckpointTensor& got = loaded.at(t.name);
    EXPECT_EQ(got.dtype(), dtype);
    EXPECT_EQ(got.shape(), t.shape);
    const Tensor f = got.to_f32();
    const float* want = static_cast<const float*>(t.data);
    for (int64_t i = 0; i < f.numel(); ++i)
      ASSERT_EQ(f.data_as<float>()[i], round_to(dtype, want[i])) << t.name << " " << i;
  }
  save_checkpoint(b.path(), loaded.config, tensors_to_save(loaded), {dtype, max_shard_bytes});
  const auto files_a = dir_contents(a.path()), files_b = dir_contents(b.path());
  EXPECT_EQ(files_a, files_b);
  if (max_shard_bytes == 0) {
    EXPECT_EQ(files_a.size(), 2u);  // config.json, model.safetensors
  } else {
    EXPECT_GT(files_a.size(), 3u);
    EXPECT_TRUE(files_a.count(kWeightsIndexFile));
    EXPECT_TRUE(files_a.count(shard_file_name(1, static_cast<int>(files_a.size()) - 2)));
    // Each shard holds at most the limit, unless a single tensor is larger.
    for (const auto& [name, t] : loaded.tensors) {
      uint64_t bytes = 0;
      for (const auto& e : t.file->tensors()) bytes += e.nbytes();
      EXPECT_TRUE(bytes <= max_shard_bytes || t.file->tensors().size() == 1) << name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(DtypesAndSharding, CheckpointRoundTrip,
                         ::testing::Combine(::testing::Values(DType::kF32, DType::kBF16,
                                                              DType::kF16),
                                            ::testing::Values(uint64_t{0}, uint64_t{700})));

TEST(Checkpoint, IndexListsEveryTensorAndTheTotalSize) {
  const LlamaConfig config = tiny_config(false);
  const Weights w = random_weights(config, true);
  ScratchDir dir;
  save_checkpoint(dir.path(), config, w.tensors, {DType::kBF16, 1000});
  const json index = json::parse(testing::read_bytes(dir / kWeightsIndexFile));
  EXPECT_EQ(index["weight_map"].size(), w.tensors.size());
  uint64_t total = 0;
  for (const TensorToSave& t : w.tensors) total += stored_nbytes(t, {DType::kBF16, {}});
  EXPECT_EQ(index["metadata"]["total_size"], total);
  EXPECT_EQ(testing::count_temp_files(dir.path()), 0);
  auto shard = SafetensorsFile::open(
      dir / shard_file_name(1, static_cast<int>(dir_contents(dir.path()).size() - 2)));
  EXPECT_EQ(shard->metadata().at("format"), "pt");
}

TEST(Checkpoint, SavingOverAnotherLayoutRemovesItsStaleFiles) {
  const LlamaConfig config = tiny_config(false);
  const Weights w = random_weights(config, true);
  ScratchDir dir;
  testing::write_bytes(dir / "tokenizer.json", "{}");  // not ours: must stay
  save_checkpoint(dir.path(), config, w.tensors, {DType::kF32, 500});
  EXPECT_GT(dir_contents(dir.path()).size(), 4u);
  save_checkpoint(dir.path(), config, w.tensors, {DType::kF32, 0});
  auto files = dir_contents(dir.path());
  EXPECT_EQ(files.size(), 3u);
  EXPECT_TRUE(files.count("model.safetensors") && files.count("tokenizer.json"));
  save_checkpoint(dir.path(), config, w.tensors, {DType::kF32, 2000});
  files = dir_contents(dir.path());
  EXPECT_FALSE(files.count("model.safetensors"));
  EXPECT_TRUE(files.count(kWeightsIndexFile));
  validate_checkpoint_tensors(load_checkpoint(dir.path()), llama_expected_tensors(config));
}

TEST(Checkpoint, ExpectedLlamaTensors) {
  LlamaConfig c = tiny_config(false);
  const ExpectedTensors t = llama_expected_tensors(c);
  EXPECT_EQ(t.size(), 3u + 9u * 2);
  EXPECT_EQ(t.at("model.embed_tokens.weight").shape, (std::vector<int64_t>{10, 8}));
  EXPECT_EQ(t.at("model.layers.1.self_attn.q_proj.weight").shape, (std::vector<int64_t>{8, 8}));
  EXPECT_EQ(t.at("model.layers.1.self_attn.k_proj.weight").shape, (std::vector<int64_t>{4, 8}));
  EXPECT_EQ(t.at("model.layers.1.self_attn.v_proj.weight").shape, (std::vector<int64_t>{4, 8}));
  EXPECT_EQ(t.at("model.layers.0.self_attn.o_proj.weight").shape, (std::vector<int64_t>{8, 8}));
  EXPECT_EQ(t.at("model.layers.0.mlp.gate_proj.weight").shape, (std::vector<int64_t>{12, 8}));
  EXPECT_EQ(t.at("model.layers.0.mlp.down_proj.weight").shape, (std::vector<int64_t>{8, 12}));
  EXPECT_EQ(t.at("model.layers.0.post_attention_layernorm.weight").shape,
            (std::vector<int64_t>{8}));
  EXPECT_EQ(t.at("model.norm.weight").shape, (std::vector<int64_t>{8}));
  EXPECT_FALSE(t.at("lm_head.weight").optional);
  c.head_dim = 6;  // head_dim need not be hidden / heads
  EXPECT_EQ(llama_expected_tensors(c).at("model.layers.0.self_attn.o_proj.weight").shape,
            (std::vector<int64_t>{8, 12}));
  EXPECT_TRUE(llama_expected_tensors(tiny_config(true)).at("lm_head.weight").optional);
}

TEST(Checkpoint, TiedEmbeddingsWithOrWithoutLmHead) {
  const LlamaConfig config = tiny_config(true);
  for (bool with_lm_head : {false, true}) {
    ScratchDir dir;
    save_checkpoint(dir.path(), config, random_weights(config, with_lm_head).tensors);
    const Checkpoint c = load_checkpoint(dir.path());
    validate_checkpoint_tensors(c, llama_expected_tensors(c.config));
    EXPECT_EQ(c.tensors.count("lm_head.weight"), with_lm_head ? 1u : 0u);
  }
  // transformers' rule: tied unless a stored lm_head differs from the embedding.
  {
    ScratchDir dir;
    Weights w = random_weights(config, true);
    save_checkpoint(dir.path(), config, w.tensors);
    EXPECT_FALSE(llama_lm_head_is_tied(load_checkpoint(dir.path()), config));
    for (auto& t : w.tensors)
      if (t.name == "lm_head.weight") t.data = w.tensors[1].data;  // model.embed_tokens.weight
    save_checkpoint(dir.path(), config, w.tensors);
    EXPECT_TRUE(llama_lm_head_is_tied(load_checkpoint(dir.path()), config));
    EXPECT_FALSE(llama_lm_head_is_tied(load_checkpoint(dir.path()), tiny_config(false)));
  }
  // Untied needs lm_head.
  const LlamaConfig untied = tiny_config(false);
  ScratchDir dir;
  save_checkpoint(dir.path(), untied, random_weights(untied, false).tensors);
  expect_error(
      [&] {
        validate_checkpoint_tensors(load_checkpoint(dir.path()), llama_expected_tensors(untied));
      },
      {dir.path().string(), "missing tensor 'lm_head.weight'"});
}

TEST(Checkpoint, ValidationReportsMissingUnknownShapeAndDtype) {
  const LlamaConfig config = tiny_config(false);
  Weights w = random_weights(config, true);
  std::vector<int32_t> ids = {1, 2, 3, 4, 5, 6, 7, 8};
  w.tensors.erase(w.tensors.begin());  // lm_head.weight (first by name)
  w.tensors.push_back({"model.extra.bias", DType::kF32, {8}, w.storage[1].data()});
  for (auto& t : w.tensors) {
    if (t.name == "model.norm.weight") t.shape = {2, 4};
    if (t.name == "model.layers.0.input_layernorm.weight")
      t = {t.name, DType::kI32, {8}, ids.data()};
  }
  ScratchDir dir;
  save_checkpoint(dir.path(), config, w.tensors, {DType::kF32, 400});
  expect_error(
      [&] {
        validate_checkpoint_tensors(load_checkpoint(dir.path()), llama_expected_tensors(config));
      },
      {dir.path().string(), "4 problems", "missing tensor 'lm_head.weight'",
       "unknown tensor 'model.extra.bias' in model-000", "tensor 'model.norm.weight' in model-000",
       "has shape [2, 4], expected [8]", "tensor 'model.layers.0.input_layernorm.weight'",
       "dtype I32, expected a float dtype"});
}

// --- bad directories -----------------------------------------------------------------------

// A sharded checkpoint of two tensors, a in shard 1 and b in shard 2, for the index tests.
struct TwoShards {
  ScratchDir dir;
  std::vector<float> a = {1, 2}, b = {3, 4};
  TwoShards() {
    save_safetensors(dir / "s1.safetensors", {{"a", DType::kF32, {2}, a.data()}});
    save_safetensors(dir / "s2.safetensors", {{"b", DType::kF32, {2}, b.data()}});
  }
  void index(const json& j) const { testing::write_bytes(dir / kWeightsIndexFile, j.dump()); }
  std::string index_path() const { return (dir / kWeightsIndexFile).string(); }
};

TEST(CheckpointErrors, HandWrittenIndexLoads) {
  TwoShards t;
  t.index({{"metadata", {{"total_size", 16}}},
           {"weight_map", {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}}}});
  const CheckpointTensors c = load_checkpoint_tensors(t.dir.path());
  EXPECT_EQ(c.at("b").source().filename(), "s2.safetensors");
  EXPECT_EQ(c.at("a").to_f32().data_as<float>()[1], 2.0f);
  EXPECT_EQ(c.at("a").view().data_as<float>()[0], 1.0f);
  expect_error([&] { c.at("zz"); }, {t.dir.path().string(), "no tensor 'zz'"});
}

TEST(CheckpointErrors, NoDirectoryNoWeightsNoConfig) {
  ScratchDir dir;
  expect_error([&] { load_checkpoint(dir / "absent"); }, {"absent", "not a checkpoint directory"});
  expect_error([&] { load_checkpoint_tensors(dir.path()); },
               {dir.path().string(),
                "no weights: expected model.safetensors or model.safetensors.index.json"});
  expect_error([&] { load_checkpoint(dir.path()); }, {dir.path().string(), "no config.json"});
  testing::write_bytes(dir / kConfigFile, "{\"hidden_size\": 8}");
  expect_error([&] { load_checkpoint(dir.path()); },
               {(dir / kConfigFile).string(), "num_hidden_layers"});
}

TEST(CheckpointErrors, BothSingleFileAndIndex) {
  TwoShards t;
  t.index({{"weight_map", {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}}}});
  std::filesystem::copy_file(t.dir / "s1.safetensors", t.dir / kSingleWeightsFile);
  expect_error([&] { load_checkpoint_tensors(t.dir.path()); },
               {t.dir.path().string(), "both model.safetensors and model.safetensors.index.json"});
}

TEST(CheckpointErrors, IndexNotJsonOrWrongShape) {
  TwoShards t;
  testing::write_bytes(t.dir / kWeightsIndexFile, "{\"weight_map\": ");
  expect_error([&] { load_checkpoint_tensors(t.dir.path()); }, {t.index_path(), "invalid JSON"});
  t.index(json::array());
  expect_error([&] { load_checkpoint_tensors(t.dir.path()); },
               {t.index_path(), "expected a JSON object"});
  t.index({{"metadata", json::object()}});
  expect_error([&] { load_checkpoint_tensors(t.dir.path()); },
               {t.index_path(), "weight_map: expected an object"});
  t.index({{"weight_map", json::object()}});
  expect_error([&] { load_checkpoint_tensors(t.dir.path()); },
               {t.index_path(), "weight_map is empty"});
  t.index({{"weight_map", {{"a", 1}}}});
  expect_error([&] { load_checkpoint_tensors(t.dir.path()); },
               {t.index_path(), "tensor 'a': expected a shard file name, got 1"});
  t.index({{"metadata", 3}, {"weight_map", {{"a", "s1.safetensors"}}}});
  expect_error([&] { load_checkpoint_tensors(t.dir.path()); },
               {t.index_path(), "metadata: expected an object"});
  t.index({{"metadata", {{"total_size", "8"}}}, {"weight_map", {{"a", "s1.safetensors"}}}});
  expect_error([&] { load_checkpoint_tensors(t.dir.path()); },
               {t.index_path(), "metadata.total_size: expected a non-negative integer"});
  testing::write_bytes(t.dir / kWeightsIndexFile,
                       R"({"weight_map": {"a": "s1.safetensors", "a": "s2.safetensors"}})");
  expect_error([&] { load_checkpoint_tensors(t.dir.path()); },
               {t.index_path(), "duplicate key 'a'"});
}

TEST(CheckpointErrors, ShardNamesMustBePlainFileNames) {
  TwoShards t;
  for (const char* bad :
       {"../s1.safetensors", "sub/s1.safetensors", "/etc/passwd", "..", ".", ""}) {
    t.index({{"weight_map", {{"a", bad}, {"b", "s2.safetensors"}}}});
    expect_error([&] { load_checkpoint_tensors(t.dir.path()); },
                 {t.index_path(), "tensor 'a'", "is not a plain file name"});
  }
}

TEST(CheckpointErrors, MissingOrCorruptShard) {
  TwoShards t;
  t.index({{"weight_map", {{"a", "s1.safetensors"}, {"b", "s3.safetensors"}}}});
  expect_error([&] { load_checkpoint_tensors(t.dir.path()); },
               {t.index_path(), "shard s3.safetensors (of tensor 'b') does not exist"});
  testing::write_bytes(t.dir / "s3.safetensors", "garbage");
  expect_error([&] { load_checkpoint_tensors(t.dir.path()); },
               {(t.dir / "s3.safetensors").string(), "shorter than the 8-byte header length"});
}

TEST(CheckpointErrors, TensorInAShardButNotInTheMap) {
  TwoShards t;
  t.index({{"weight_map", {{"a", "s1.safetensors"}, {"c", "s2.safetensors"}}}});
  expect_error([&] { load_checkpoint_tensors(t.dir.path()); },
               {(t.dir / "s2.safetensors").string(), "tensor 'b' is not in the weight_map"});
}

TEST(CheckpointErrors, TensorInTheMapButNotInItsShard) {
  TwoShards t;
  t.index({{"weight_map",
            {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}, {"c", "s2.safetensors"}}}});
  expect_error(
      [&] { load_checkpoint_tensors(t.dir.path()); },
      {t.index_path(), "tensor 'c' is mapped to s2.safetensors, which does not contain it"});
}

TEST(CheckpointErrors, TensorInAnotherShardThanMapped) {
  TwoShards t;
  std::vector<float> x = {5, 6};
  save_safetensors(t.dir / "s2.safetensors",
                   {{"b", DType::kF32, {2}, t.b.data()}, {"x", DType::kF32, {2}, x.data()}});
  save_safetensors(t.dir / "s1.safetensors",
                   {{"a", DType::kF32, {2}, t.a.data()}, {"x2", DType::kF32, {2}, x.data()}});
  t.index({{"weight_map",
            {{"a", "s1.safetensors"},
             {"b", "s2.safetensors"},
             {"x", "s2.safetensors"},
             {"x2", "s2.safetensors"}}}});
  expect_error([&] { load_checkpoint_tensors(t.dir.path()); },
               {(t.dir / "s1.safetensors").string(), "tensor 'x2' is in this shard, but",
                "maps it to s2.safetensors"});
}

TEST(CheckpointErrors, TensorInTwoShards) {
  TwoShards t;
  save_safetensors(t.dir / "s2.safetensors",
                   {{"a", DType::kF32, {2}, t.a.data()}, {"b", DType::kF32, {2}, t.b.data()}});
  t.index({{"weight_map", {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}}}});
  expect_error([&] { load_checkpoint_tensors(t.dir.path()); },
               {t.index_path(), "tensor 'a' is in two shards: s1.safetensors and s2.safetensors"});
}

TEST(CheckpointErrors, SaveRejectsBadInput) {
  const LlamaConfig config = tiny_config(false);
  Weights w = random_weights(config, true);
  ScratchDir dir;
  expect_error(
      [&] {
        save_checkpoint(dir.path(), config, w.tensors, {DType::kF64, 0});
      },
      {"dtype: expected f32, bf16 or f16, got f64"});
  w.tensors.push_back(w.tensors[0]);
  expect_error([&] { save_checkpoint(dir.path(), config, w.tensors); },
               {dir.path().string(), "given twice"});
  EXPECT_EQ(testing::count_temp_files(dir.path()), 0);
}

}  // namespace
}  // namespace subq::formats
