#include "formats/gguf_llama.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <map>
#include <regex>

#include <nlohmann/json.hpp>

#include "formats/tokenizer_bpe.h"
#include "formats/tokenizer_sentencepiece.h"
#include "subq/error.h"

namespace subq::formats {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// GGUF block names -> transformers' names. Per layer ("blk.N.<key>") and global.
const std::map<std::string, std::string>& layer_names() {
  static const std::map<std::string, std::string> m = {
      {"attn_norm.weight", "input_layernorm.weight"},
      {"attn_q.weight", "self_attn.q_proj.weight"},
      {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},
      {"attn_output.weight", "self_attn.o_proj.weight"},
      {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},
      {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"},
  };
  return m;
}

const std::map<std::string, std::string>& global_names() {
  static const std::map<std::string, std::string> m = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
  };
  return m;
}

}  // namespace

LlamaConfig gguf_llama_config(const GgufHeader& header, const std::string& src) {
  const GgufMetadata md(header, src);
  const std::string arch = md.string("general.architecture");
  // Mistral files say "llama" too (llama.cpp converts them as such).
  SUBQ_CHECK(arch == "llama", src, ": general.architecture: \"", arch,
             "\" is not supported (supported: llama)");
  const auto key = [&](const char* k) { return "llama." + std::string(k); };
  // Bounded like config.json's sizes, before anything is allocated from them.
  const auto size = [&](const std::string& k, std::optional<int64_t> fallback) -> int64_t {
    const int64_t v = fallback && !md.has(k) ? *fallback : md.integer(k);
    SUBQ_CHECK(v > 0 && v < (int64_t{1} << 31), src, ": ", k,
               ": expected a positive integer below 2^31, got ", v);
    return v;
  };
  LlamaConfig c;
  c.hidden_size = size(key("embedding_length"), std::nullopt);
  c.num_hidden_layers = size(key("block_count"), std::nullopt);
  // Before anything is sized by it (the per-layer specs below, the model's tensors).
  SUBQ_CHECK(c.num_hidden_layers <= kMaxLayers, src, ": ", key("block_count"),
             ": expected at most ", kMaxLayers, ", got ", c.num_hidden_layers);
  c.num_attention_heads = size(key("attention.head_count"), std::nullopt);
  c.num_key_value_heads = size(key("attention.head_count_kv"), c.num_attention_heads);
  c.intermediate_size = size(key("feed_forward_length"), std::nullopt);
  c.max_position_embeddings = size(key("context_length"), 2048);
  SUBQ_CHECK(c.hidden_size % c.num_attention_heads == 0 || md.has(key("attention.key_length")), src,
             ": ", key("embedding_length"), " (", c.hidden_size,
             ") is not divisible by the head count and no key_length is given");
  c.head_dim = size(key("attention.key_length"), c.hidden_size / c.num_attention_heads);
  const int64_t value_dim = size(key("attention.value_length"), c.head_dim);
  SUBQ_CHECK(value_dim == c.head_dim, src, ": ", key("attention.value_length"), " (", value_dim,
             ") differs from key_length (", c.head_dim, "): not supported");
  const int64_t rope_dims = size(key("rope.dimension_count"), c.head_dim);
  SUBQ_CHECK(rope_dims == c.head_dim, src, ": ", key("rope.dimension_count"), " (", rope_dims,
             "): partial rotary embeddings are not supported (expected the head dim, ", c.head_dim,
             ")");
  const std::string scaling = md.string_or(key("rope.scaling.type"), "none");
  SUBQ_CHECK(scaling == "none", src, ": ", key("rope.scaling.type"), ": \"", scaling,
             "\" is not supported yet (only unscaled RoPE)");
  for (const char* unsupported : {"expert_count", "attention.sliding_window"})
    SUBQ_CHECK(!md.has(key(unsupported)), src, ": ", key(unsupported), ": not supported");
  c.rope_theta = md.number_or(key("rope.freq_base"), 10000.0);
  c.rms_norm_eps = md.number_or(key("attention.layer_norm_rms_epsilon"), 1e-5);

  // The vocabulary: llama.vocab_size, else the tokenizer's, else the embedding's rows.
  if (md.has(key("vocab_size"))) {
    c.vocab_size = size(key("vocab_size"), std::nullopt);
  } else if (const GgufTensorInfo* e = header.find("token_embd.weight")) {
    c.vocab_size = e->dims.size() == 2 ? e->dims[1] : 0;
  }
  SUBQ_CHECK(c.vocab_size > 0 && c.vocab_size < (int64_t{1} << 31), src,
             ": no vocabulary size (llama.vocab_size, or a 2-D token_embd.weight)");
  c.tie_word_embeddings = header.find("output.weight") == nullptr;
  if (md.has("tokenizer.ggml.bos_token_id"))
    c.bos_token_id = md.integer("tokenizer.ggml.bos_token_id");
  if (md.has("tokenizer.ggml.eos_token_id"))
    c.eos_token_ids.push_back(md.integer("tokenizer.ggml.eos_token_id"));
  c.dtype = "float32";  // what it loads as: every type is dequantized to f32
  c.layers.assign(static_cast<size_t>(c.num_hidden_layers), LayerSpec{});
  c.fields = json{{"architectures", json::array({"LlamaForCausalLM"})},
                  {"model_type", "llama"},
                  {"hidden_act", "silu"}};
  validate_llama_config(c, src);
  return c;
}

namespace {

// The tokenizer.json pre_tokenizer for llama.cpp's tokenizer.ggml.pre names. The split regexes
// are those transformers uses for these names; "smollm" first isolates every digit, as
// llama.cpp does (SmolLM's own tokenizer.json has a Digits(individual_digits) step).
json pre_tokenizer_for(const std::string& pre, const std::string& src) {
  const auto byte_level = [](bool use_regex) {
    return json{{"type", "ByteLevel"},
                {"add_prefix_space", false},
                {"trim_offsets", true},
                {"use_regex", use_regex}};
  };
  const auto split = [](const std::string& regex) {
    return json{{"type", "Split"},
                {"pattern", {{"Regex", regex}}},
                {"behavior", "Isolated"},
                {"invert", false}};
  };
  static const std::string kLlama3 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3})"
      R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  static const std::string kQwen2 = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N})"
                                    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  if (pre == "default" || pre == "gpt2") return byte_level(true);
  if (pre == "smollm")
    return json{{"type", "Sequence"},
                {"pretokenizers", json::array({split(R"(\p{N})"), byte_level(true)})}};
  for (const char* name : {"llama3", "llama-v3", "llama-bpe", "smaug-bpe", "dbrx", "falcon3"})
    if (pre == name)
      return json{{"type", "Sequence"},
                  {"pretokenizers", json::array({split(kLlama3), byte_level(false)})}};
  for (const char* name : {"qwen2", "deepseek-r1-qwen"})
    if (pre == name)
      return json{{"type", "Sequence"},
                  {"pretokenizers", json::array({split(kQwen2), byte_level(false)})}};
  throw Error(detail::concat(src, ": tokenizer.ggml.pre: \"", pre,
                             "\" is not supported (supported: default, gpt2, smollm, llama3, "
                             "llama-v3, llama-bpe, smaug-bpe, dbrx, falcon3, qwen2, "
                             "deepseek-r1-qwen)"));
}

// A protobuf writer for the few fields of sentencepiece_model.proto that a GGUF `llama`
// tokenizer fills (field numbers from that file): varints, 32-bit floats, and length-delimited
// strings and messages.
class ProtoWriter {
 public:
  void varint(uint32_t field, uint64_t v) {
    key(field, 0);
    raw_varint(v);
  }
  void int32(uint32_t field, int32_t v) {  // negative: ten bytes, two's complement
    varint(field, static_cast<uint64_t>(static_cast<int64_t>(v)));
  }
  void float32(uint32_t field, float v) {
    key(field, 5);
    char b[4];
    std::memcpy(b, &v, 4);
    out_.append(b, 4);
  }
  void bytes(uint32_t field, std::string_view v) {
    key(field, 2);
    raw_varint(v.size());
    out_.append(v);
  }
  const std::string& str() const { return out_; }

 private:
  void key(uint32_t field, uint32_t wire_type) { raw_varint((uint64_t{field} << 3) | wire_type); }
  void raw_varint(uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out_.push_back(static_cast<char>(v));
  }
  std::string out_;
};

// tokenizer.ggml.model "llama": llama.cpp's converter wrote a SentencePiece BPE model's pieces,
// scores and types; rebuild that ModelProto (identity normalizer, byte fallback when there are
// byte pieces, the dummy prefix unless add_space_prefix is false) for libsentencepiece.
std::unique_ptr<Tokenizer> gguf_sentencepiece(const GgufMetadata& md, const std::string& src,
                                              const std::vector<std::string>& tokens) {
  SUBQ_CHECK(md.has("tokenizer.ggml.scores"), src,
             ": tokenizer.ggml.scores is missing (a llama tokenizer needs its piece scores)");
  const std::vector<double> scores = md.numbers("tokenizer.ggml.scores");
  const std::vector<int64_t> types = md.integers("tokenizer.ggml.token_type");
  SUBQ_CHECK(scores.size() == tokens.size() && types.size() == tokens.size(), src,
             ": tokenizer.ggml.scores and token_type must have one entry per token (",
             tokens.size(), "), got ", scores.size(), " and ", types.size());
  ProtoWriter model;
  bool has_bytes = false;
  for (size_t id = 0; id < tokens.size(); ++id) {
    SUBQ_CHECK(types[id] >= 1 && types[id] <= 6, src, ": tokenizer.ggml.token_type[", id,
               "]: expected 1 to 6, got ", types[id]);
    has_bytes |= types[id] == 6;
    ProtoWriter piece;
    piece.bytes(1, tokens[id]);                         // piece
    piece.float32(2, static_cast<float>(scores[id]));   // score
    piece.varint(3, static_cast<uint64_t>(types[id]));  // type: NORMAL 1 .. BYTE 6
    model.bytes(1, piece.str());                        // ModelProto.pieces
  }
  ProtoWriter trainer;
  trainer.varint(3, 2);  // model_type BPE
  trainer.varint(4, tokens.size());
  trainer.varint(35, has_bytes ? 1 : 0);  // byte_fallback
  const auto piece_of = [&](const char* key, uint32_t field) {
    if (!md.has(key)) return;
    const int64_t id = md.integer(key);
    SUBQ_CHECK(id >= 0 && id < static_cast<int64_t>(tokens.size()), src, ": ", key, ": id ", id,
               " is not in the vocabulary of ", tokens.size());
    trainer.bytes(field, tokens[static_cast<size_t>(id)]);
  };
  piece_of("tokenizer.ggml.unknown_token_id", 45);  // unk_piece
  piece_of("tokenizer.ggml.bos_token_id", 46);      // bos_piece
  piece_of("tokenizer.ggml.eos_token_id", 47);      // eos_piece
  model.bytes(2, trainer.str());
  ProtoWriter normalizer;
  normalizer.bytes(1, "identity");
  normalizer.varint(3, md.boolean_or("tokenizer.ggml.add_space_prefix", true) ? 1 : 0);
  normalizer.varint(4, 0);  // remove_extra_whitespaces
  normalizer.varint(5, 1);  // escape_whitespaces
  model.bytes(3, normalizer.str());
  return sentencepiece_tokenizer_from_proto(model.str(), src);
}

}  // namespace

bool is_gguf_path(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char ch) { return std::tolower(ch); });
  return ext == ".gguf";
}

void gguf_unpermute_rope_rows(Tensor& t, int64_t heads) {
  const TensorView v = t.view();
  SUBQ_CHECK(v.rank() == 2 && v.dtype() == DType::kF32 && heads > 0 && v.size(0) % (2 * heads) == 0,
             "gguf_unpermute_rope_rows: expected an f32 matrix whose rows are ", heads,
             " heads of an even size");
  const int64_t rows = v.size(0), cols = v.size(1), head_dim = rows / heads, half = head_dim / 2;
  const auto* src_rows = static_cast<const float*>(v.data());
  std::vector<float> out(static_cast<size_t>(rows * cols));
  // gguf row h·hd + 2i + j holds transformers' row h·hd + j·half + i.
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j)
        std::memcpy(&out[static_cast<size_t>((h * head_dim + j * half + i) * cols)],
                    src_rows + (h * head_dim + 2 * i + j) * cols, static_cast<size_t>(cols) * 4);
  std::memcpy(v.data(), out.data(), out.size() * 4);
}

Checkpoint load_gguf_checkpoint(const fs::path& path) {
  const auto file = GgufFile::open(path);
  const std::string src = path.string();
  Checkpoint c;
  c.dir = path;
  c.config = gguf_llama_config(file->header(), src);
  static const std::regex block(R"(blk\.(\d{1,9})\.(.+))");
  for (const GgufTensorInfo& t : file->header().tensors) {
    std::string name;
    int64_t rope_heads = 0;
    std::smatch m;
    if (const auto g = global_names().find(t.name); g != global_names().end()) {
      name = g->second;
    } else if (std::regex_match(t.name, m, block) && layer_names().count(m[2].str())) {
      const int64_t layer = std::stoll(m[1].str());
      SUBQ_CHECK(layer < c.config.num_hidden_layers, src, ": tensor '", t.name, "': block ", layer,
                 " is past llama.block_count (", c.config.num_hidden_layers, ")");
      name = "model.layers." + std::to_string(layer) + "." + layer_names().at(m[2].str());
      if (m[2] == "attn_q.weight") rope_heads = c.config.num_attention_heads;
      if (m[2] == "attn_k.weight") rope_heads = c.config.num_key_value_heads;
    } else {
      throw Error(detail::concat(src, ": tensor '", t.name, "' (", t.type_name,
                                 ") is not part of a supported llama model"));
    }
    CheckpointTensor ct;
    ct.gguf = file;
    ct.gguf_tensor = &t;
    ct.gguf_rope_heads = rope_heads;
    ct.gguf_shape = t.shape();
    c.tensors.emplace(name, std::move(ct));
  }
  return c;
}

std::unique_ptr<Tokenizer> load_gguf_tokenizer(const fs::path& path) {
  const auto file = GgufFile::open(path);
  return gguf_tokenizer(file->header(), path.string());
}

std::unique_ptr<Tokenizer> gguf_tokenizer(const GgufHeader& header, const std::string& src) {
  const GgufMetadata md(header, src);
  const std::string model = md.string("tokenizer.ggml.model");
  SUBQ_CHECK(model == "gpt2" || model == "llama", src, ": tokenizer.ggml.model: \"", model,
             "\" is not supported (supported: gpt2, byte-level BPE; llama, SentencePiece)");
  const std::vector<std::string> tokens = md.strings("tokenizer.ggml.tokens");
  SUBQ_CHECK(!tokens.empty(), src, ": tokenizer.ggml.tokens is empty");
  if (model == "llama") return gguf_sentencepiece(md, src, tokens);
  const std::vector<std::string> merges = md.strings("tokenizer.ggml.merges");
  std::vector<int64_t> types;
  if (md.has("tokenizer.ggml.token_type")) {
    types = md.integers("tokenizer.ggml.token_type");
    SUBQ_CHECK(types.size() == tokens.size(), src, ": tokenizer.ggml.token_type has ", types.size(),
               " entries for ", tokens.size(), " tokens");
  }
  // The vocabulary in the byte-level spelling (a token written otherwise is respelled from its
  // UTF-8 bytes, as transformers does); control tokens (type 3) become special added tokens and
  // user-defined ones (type 4) plain added tokens, so that both are matched whole in text.
  json vocab = json::object();
  json added = json::array();
  for (size_t id = 0; id < tokens.size(); ++id) {
    const std::string& token = tokens[id];
    SUBQ_CHECK(!token.empty(), src, ": tokenizer.ggml.tokens[", id, "] is empty");
    const bool spelled = is_byte_level_spelled(token);
    vocab[spelled ? token : byte_level_spell(token)] = id;
    const int64_t type = types.empty() ? 1 : types[id];
    if ((type == 3 && spelled) || type == 4)
      added.push_back({{"id", id},
                       {"content", token},
                       {"special", type == 3},
                       {"normalized", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"single_word", false}});
  }
  json root = {
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"vocab", std::move(vocab)},
        {"merges", merges},
        {"byte_fallback", false}}},
      {"added_tokens", std::move(added)},
      {"pre_tokenizer", pre_tokenizer_for(md.string_or("tokenizer.ggml.pre", "default"), src)},
      {"decoder", {{"type", "ByteLevel"}}},
      {"post_processor", nullptr},
  };
  std::optional<int32_t> bos, eos;
  const auto id_of = [&](const char* k) -> std::optional<int32_t> {
    if (!md.has(k)) return std::nullopt;
    const int64_t id = md.integer(k);
    SUBQ_CHECK(id >= 0 && id < static_cast<int64_t>(tokens.size()), src, ": ", k, ": id ", id,
               " is not in the vocabulary of ", tokens.size());
    return static_cast<int32_t>(id);
  };
  bos = id_of("tokenizer.ggml.bos_token_id");
  eos = id_of("tokenizer.ggml.eos_token_id");
  if (md.boolean_or("tokenizer.ggml.add_bos_token", false)) {
    SUBQ_CHECK(bos.has_value(), src,
               ": tokenizer.ggml.add_bos_token is set but there is no bos id");
    root["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", tokens[*bos]}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"pair", json::array()},
        {"special_tokens",
         {{tokens[*bos], {{"id", tokens[*bos]}, {"ids", {*bos}}, {"tokens", {tokens[*bos]}}}}}}};
  }
  return bpe_tokenizer_from_json(root, src, bos, eos);
}

}  // namespace subq::formats
