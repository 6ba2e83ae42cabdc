// The GGUF reader on files built here byte by byte: every validation rule, the metadata
// accessors, the llama mapping (names, config, q/k un-permutation) and the tokenizer built from
// metadata. The comparison with PyPI's gguf and transformers is tests/formats/gguf_vs_pypi.py.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "formats/gguf.h"
#include "formats/gguf_llama.h"
#include "subq/dtype.h"
#include "tests/formats/checkpoint_test_util.h"

namespace subq::formats {
namespace {

using testing::expect_error;
using testing::ScratchDir;

// A little-endian GGUF writer for tests: metadata, tensor infos, then data at the alignment.
class GgufBuilder {
 public:
  uint32_t version = 3;
  uint64_t alignment = 32;

  void kv_u32(const std::string& key, uint32_t v) { kv(key, 4, pod(v)); }
  void kv_f32(const std::string& key, float v) { kv(key, 6, pod(v)); }
  void kv_bool(const std::string& key, bool v) { kv(key, 7, std::string(1, v ? 1 : 0)); }
  void kv_str(const std::string& key, const std::string& v) { kv(key, 8, str(v)); }
  void kv_strs(const std::string& key, const std::vector<std::string>& v) {
    std::string b = pod(uint32_t{8}) + pod(uint64_t{v.size()});
    for (const auto& s : v) b += str(s);
    kv(key, 9, b);
  }
  void kv_i32s(const std::string& key, const std::vector<int32_t>& v) {
    std::string b = pod(uint32_t{5}) + pod(uint64_t{v.size()});
    for (int32_t x : v) b += pod(x);
    kv(key, 9, b);
  }
  void kv_raw(const std::string& key, uint32_t type, const std::string& value) {
    kv(key, type, value);
  }
  // An f32 tensor with dims in GGUF order (dims[0] fastest).
  void tensor_f32(const std::string& name, const std::vector<uint64_t>& dims,
                  const std::vector<float>& values) {
    std::string bytes(values.size() * 4, '\0');
    std::memcpy(bytes.data(), values.data(), bytes.size());
    tensor(name, dims, 0, bytes);
  }
  void tensor(const std::string& name, const std::vector<uint64_t>& dims, uint32_t type,
              const std::string& bytes, std::optional<uint64_t> offset = std::nullopt) {
    while (data_.size() % alignment) data_.push_back('\0');
    infos_.push_back({name, dims, type, offset.value_or(data_.size())});
    data_ += bytes;
  }
  std::string build() const {
    std::string out = pod(uint32_t{0x46554747}) + pod(version) + pod(uint64_t{infos_.size()}) +
                      pod(uint64_t{n_kv_}) + kvs_;
    for (const auto& t : infos_) {
      out += str(t.name) + pod(uint32_t(t.dims.size()));
      for (uint64_t d : t.dims) out += pod(d);
      out += pod(t.type) + pod(t.offset);
    }
    while (out.size() % alignment) out.push_back('\0');
    return out + data_;
  }

  template <class T>
  static std::string pod(T v) {
    std::string s(sizeof(T), '\0');
    std::memcpy(s.data(), &v, sizeof(T));
    return s;
  }
  static std::string str(const std::string& s) { return pod(uint64_t{s.size()}) + s; }

 private:
  struct Info {
    std::string name;
    std::vector<uint64_t> dims;
    uint32_t type;
    uint64_t offset;
  };
  void kv(const std::string& key, uint32_t type, const std::string& value) {
    kvs_ += str(key) + pod(type) + value;
    ++n_kv_;
  }
  std::string kvs_, data_;
  std::vector<Info> infos_;
  size_t n_kv_ = 0;
};

GgufHeader parse(const std::string& bytes) {
  return parse_gguf(bytes.data(), bytes.size(), "t.gguf");
}

void expect_bad(const std::string& bytes, const std::string& problem) {
  expect_error([&] { parse(bytes); }, {"t.gguf", problem});
}

TEST(Gguf, ParsesMetadataAndTensors) {
  GgufBuilder b;
  b.kv_u32("a.u32", 7);
  b.kv_f32("a.f32", 0.5f);
  b.kv_bool("a.bool", true);
  b.kv_str("a.str", "hello");
  b.kv_strs("a.strs", {"x", "", "zz"});
  b.kv_i32s("a.ints", {-1, 2});
  b.tensor_f32("w", {3, 2}, {1, 2, 3, 4, 5, 6});
  b.tensor_f32("v", {4}, {1, 2, 3, 4});
  const std::string bytes = b.build();
  const GgufHeader h = parse(bytes);
  EXPECT_EQ(h.version, 3u);
  ASSERT_EQ(h.tensors.size(), 2u);
  EXPECT_EQ(h.tensors[0].shape(), (std::vector<int64_t>{2, 3}));  // torch order
  EXPECT_EQ(h.tensors[1].offset % 32, 0u);
  const GgufMetadata md(h, "t.gguf");
  EXPECT_EQ(md.integer("a.u32"), 7);
  EXPECT_EQ(md.number("a.f32"), 0.5);
  EXPECT_EQ(md.number("a.u32"), 7.0);
  EXPECT_TRUE(md.boolean_or("a.bool", false));
  EXPECT_EQ(md.string("a.str"), "hello");
  EXPECT_EQ(md.strings("a.strs"), (std::vector<std::string>{"x", "", "zz"}));
  EXPECT_EQ(md.integers("a.ints"), (std::vector<int64_t>{-1, 2}));
  EXPECT_EQ(md.integer_or("missing", 3), 3);
  expect_error([&] { md.integer("a.str"); },
               {"t.gguf", "a.str", "expected an integer, got string"});
  expect_error([&] { md.strings("a.ints"); }, {"a.ints", "array of strings, got array of i32"});
  expect_error([&] { md.string("nope"); }, {"nope", "missing"});
  expect_error([&] { md.integer("a.bool"); }, {"a.bool", "got bool"});
}

TEST(Gguf, FileReadsF32AndVersion2) {
  ScratchDir dir;
  GgufBuilder b;
  b.version = 2;
  b.tensor_f32("w", {3, 2}, {1, 2, 3, 4, 5, 6});
  testing::write_bytes(dir / "m.gguf", b.build());
  const auto f = GgufFile::open(dir / "m.gguf");
  const Tensor t = f->to_f32(f->tensor("w"));
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t.data_as<float>()[5], 6.0f);
  expect_error([&] { f->tensor("x"); }, {"m.gguf", "no tensor 'x'"});
}

TEST(Gguf, RejectsBadHeaders) {
  GgufBuilder b;
  b.kv_u32("k", 1);
  b.tensor_f32("w", {32}, std::vector<float>(32, 1.0f));
  const std::string good = b.build();
  expect_bad("", "not a GGUF file");
  expect_bad("GGUX" + good.substr(4), "not a GGUF file");
  std::string v1 = good;
  v1[4] = 1;
  expect_bad(v1, "version 1 is not supported");
  for (size_t cut : {size_t{6}, size_t{20}, size_t{30}, good.size() - 1})
    expect_error([&] { parse(good.substr(0, cut)); }, {"t.gguf"});
  std::string kv = good;
  std::memcpy(kv.data() + 16, GgufBuilder::pod(uint64_t{1} << 60).data(), 8);
  expect_bad(kv, "metadata_kv_count");
  std::string tc = good;
  std::memcpy(tc.data() + 8, GgufBuilder::pod(uint64_t{1} << 62).data(), 8);
  expect_bad(tc, "tensor_count");
}

TEST(Gguf, BoundsEveryLengthAndCount) {
  const auto with_value = [](uint32_t type, const std::string& value) {
    GgufBuilder b;
    b.kv_raw("k", type, value);
    return b.build();
  };
  using B = GgufBuilder;
  expect_bad(with_value(8, B::pod(uint64_t{1} << 40)), "string of");
  expect_bad(with_value(9, B::pod(uint32_t{4}) + B::pod(uint64_t{1} << 40)), "cannot fit");
  expect_bad(with_value(9, B::pod(uint32_t{77}) + B::pod(uint64_t{1})),
             "unknown array element type");
  expect_bad(with_value(13, ""), "unknown value type 13");
  expect_bad(with_value(7, std::string(1, 2)), "bool value 2");
  expect_bad(with_value(10, B::pod(~uint64_t{0})), "out of range");
  // Arrays of arrays: nesting is bounded.
  std::string nested;
  for (int i = 0; i < 20; ++i) nested += B::pod(uint32_t{9}) + B::pod(uint64_t{1});
  expect_bad(with_value(9, nested), "nested deeper than 8");
  GgufBuilder dup;
  dup.kv_u32("k", 1);
  dup.kv_u32("k", 2);
  expect_bad(dup.build(), "duplicate metadata key");
  GgufBuilder align;
  align.kv_u32("general.alignment", 24);
  expect_bad(align.build(), "general.alignment");
}

TEST(Gguf, ValidatesTensorInfos) {
  const auto one = [](const std::vector<uint64_t>& dims, uint32_t type, std::string bytes,
                      std::optional<uint64_t> offset = std::nullopt) {
    GgufBuilder b;
    b.tensor("w", dims, type, bytes, offset);
    return b.build();
  };
  expect_bad(one({}, 0, ""), "0 dimensions");
  expect_bad(one({1, 1, 1, 1, 1}, 0, std::string(4, '\0')), "5 dimensions");
  expect_bad(one({0}, 0, ""), "dimension 0 is 0");
  expect_bad(one({uint64_t{1} << 40, uint64_t{1} << 40}, 0, ""), "fewer than 2^62");
  expect_bad(one({4}, 4, std::string(16, '\0')), "unknown ggml type 4");
  expect_bad(one({16}, 8, std::string(34, '\0')), "not whole Q8_0 blocks of 32");
  expect_bad(one({32}, 0, std::string(100, '\0')), "ends past the end of the file");
  expect_bad(one({8}, 0, std::string(32, '\0'), 3), "not a multiple of the alignment");
  expect_bad(one({uint64_t{1} << 30}, 0, ""), "more bytes than the whole file");
  GgufBuilder dup;
  dup.tensor_f32("w", {1}, {1});
  dup.tensor_f32("w", {1}, {1});
  expect_bad(dup.build(), "duplicate tensor name");
  GgufBuilder overlap;
  overlap.tensor_f32("a", {16}, std::vector<float>(16, 0));
  overlap.tensor("b", {16}, 0, std::string(64, '\0'), 32);
  expect_bad(overlap.build(), "overlap");
}

TEST(Gguf, UnsupportedTypeIsNamedWhenRead) {
  ScratchDir dir;
  GgufBuilder b;
  b.tensor("w", {32}, 20, std::string(18, '\0'));  // IQ4_NL: known, not dequantized here
  testing::write_bytes(dir / "m.gguf", b.build());
  const auto f = GgufFile::open(dir / "m.gguf");
  expect_error([&] { f->to_f32(f->tensor("w")); }, {"m.gguf", "'w'", "IQ4_NL is not supported"});
}

TEST(Gguf, UnpermuteInvertsLlamaCppsRopeOrder) {
  // 2 heads of dim 4, 3 columns: hf rows r -> gguf as the converter permutes them.
  const int64_t heads = 2, hd = 4, rows = heads * hd, cols = 3;
  std::vector<float> hf(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) hf[i] = static_cast<float>(i);
  Tensor gguf = Tensor::empty({rows, cols}, DType::kF32);
  // gguf = hf.reshape(heads, 2, hd/2, cols).swapaxes(1, 2).reshape(rows, cols)
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < hd / 2; ++i)
      for (int64_t j = 0; j < 2; ++j)
        for (int64_t c = 0; c < cols; ++c)
          gguf.data_as<float>()[((h * hd / 2 + i) * 2 + j) * cols + c] =
              hf[((h * 2 + j) * hd / 2 + i) * cols + c];
  gguf_unpermute_rope_rows(gguf, heads);
  for (int64_t i = 0; i < rows * cols; ++i) EXPECT_EQ(gguf.data_as<float>()[i], hf[i]) << i;
}

// A tiny llama file: 1 layer, hidden 4, 2 heads, 1 kv head, ffn 8, vocab 6.
GgufBuilder tiny_llama() {
  GgufBuilder b;
  b.kv_str("general.architecture", "llama");
  b.kv_u32("llama.block_count", 1);
  b.kv_u32("llama.embedding_length", 4);
  b.kv_u32("llama.feed_forward_length", 8);
  b.kv_u32("llama.attention.head_count", 2);
  b.kv_u32("llama.attention.head_count_kv", 1);
  b.kv_u32("llama.context_length", 64);
  b.kv_f32("llama.rope.freq_base", 5e5f);
  b.kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  b.kv_str("tokenizer.ggml.model", "gpt2");
  b.kv_str("tokenizer.ggml.pre", "smollm");
  b.kv_strs("tokenizer.ggml.tokens", {"<s>", "a", "b", "ab", "1", "\xC4\xA0"});
  b.kv_i32s("tokenizer.ggml.token_type", {3, 1, 1, 1, 1, 1});
  b.kv_strs("tokenizer.ggml.merges", {"a b"});
  b.kv_u32("tokenizer.ggml.bos_token_id", 0);
  b.kv_u32("tokenizer.ggml.eos_token_id", 0);
  const auto f = [](size_t n) { return std::vector<float>(n, 0.25f); };
  b.tensor_f32("token_embd.weight", {4, 6}, f(24));
  b.tensor_f32("output_norm.weight", {4}, f(4));
  for (const char* n : {"attn_norm", "ffn_norm"})
    b.tensor_f32(std::string("blk.0.") + n + ".weight", {4}, f(4));
  b.tensor_f32("blk.0.attn_q.weight", {4, 4}, f(16));
  b.tensor_f32("blk.0.attn_k.weight", {4, 2}, f(8));
  b.tensor_f32("blk.0.attn_v.weight", {4, 2}, f(8));
  b.tensor_f32("blk.0.attn_output.weight", {4, 4}, f(16));
  b.tensor_f32("blk.0.ffn_gate.weight", {4, 8}, f(32));
  b.tensor_f32("blk.0.ffn_up.weight", {4, 8}, f(32));
  b.tensor_f32("blk.0.ffn_down.weight", {8, 4}, f(32));
  return b;
}

TEST(GgufLlama, ConfigTensorsAndTokenizer) {
  ScratchDir dir;
  testing::write_bytes(dir / "m.gguf", tiny_llama().build());
  const Checkpoint c = load_checkpoint(dir / "m.gguf");
  EXPECT_EQ(c.config.hidden_size, 4);
  EXPECT_EQ(c.config.num_key_value_heads, 1);
  EXPECT_EQ(c.config.head_dim, 2);
  EXPECT_EQ(c.config.rope_theta, 5e5);
  EXPECT_TRUE(c.config.tie_word_embeddings);
  EXPECT_EQ(c.config.vocab_size, 6);
  validate_checkpoint_tensors(c, llama_expected_tensors(c.config));
  EXPECT_EQ(c.at("model.layers.0.self_attn.k_proj.weight").shape(), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(c.at("model.layers.0.self_attn.q_proj.weight").stored_type(), "F32");
  const auto tok = load_tokenizer(dir / "m.gguf");
  EXPECT_EQ(tok->kind(), "bpe");
  EXPECT_EQ(tok->encode("ab", false), (std::vector<int32_t>{3}));
  EXPECT_EQ(tok->encode("a11", false), (std::vector<int32_t>{1, 4, 4}));
  EXPECT_EQ(tok->encode("<s>ab", false), (std::vector<int32_t>{0, 3}));
  EXPECT_EQ(tok->bos_id(), 0);
}

TEST(GgufLlama, UnsupportedIsNamed) {
  ScratchDir dir;
  const auto fails = [&](GgufBuilder b, std::initializer_list<std::string> parts) {
    testing::write_bytes(dir / "m.gguf", b.build());
    expect_error([&] { load_checkpoint(dir / "m.gguf"); }, parts);
  };
  GgufBuilder arch;
  arch.kv_str("general.architecture", "mamba");
  fails(arch, {"m.gguf", "general.architecture", "\"mamba\" is not supported"});
  GgufBuilder none;
  fails(none, {"general.architecture is missing"});
  GgufBuilder layers;  // found by fuzz_gguf: 2^31 - 1 layers sized a vector before any check
  layers.kv_str("general.architecture", "llama");
  layers.kv_u32("llama.block_count", 0x7fffffff);
  layers.kv_u32("llama.embedding_length", 4);
  fails(layers, {"llama.block_count: expected at most 65536"});
  GgufBuilder extra = tiny_llama();
  extra.tensor_f32("blk.0.attn_q.bias", {4}, {0, 0, 0, 0});
  fails(extra, {"tensor 'blk.0.attn_q.bias'", "not part of a supported llama model"});
  GgufBuilder past = tiny_llama();
  past.tensor_f32("blk.5.attn_norm.weight", {4}, {0, 0, 0, 0});
  fails(past, {"block 5 is past llama.block_count (1)"});
  GgufBuilder huge = tiny_llama();
  huge.kv_u32("llama.embedding_length", 0);  // a second key with the same name
  fails(huge, {"duplicate metadata key"});
}

TEST(GgufLlama, UnknownPreTokenizerIsNamed) {
  ScratchDir dir;
  GgufBuilder b;
  b.kv_str("tokenizer.ggml.model", "gpt2");
  b.kv_str("tokenizer.ggml.pre", "mystery");
  b.kv_strs("tokenizer.ggml.tokens", {"a"});
  b.kv_strs("tokenizer.ggml.merges", {});
  testing::write_bytes(dir / "m.gguf", b.build());
  expect_error([&] { load_tokenizer(dir / "m.gguf"); },
               {"tokenizer.ggml.pre", "\"mystery\" is not supported"});
  GgufBuilder spm;
  spm.kv_str("tokenizer.ggml.model", "bert");
  testing::write_bytes(dir / "s.gguf", spm.build());
  expect_error([&] { load_tokenizer(dir / "s.gguf"); }, {"tokenizer.ggml.model", "\"bert\""});
}

}  // namespace
}  // namespace subq::formats
